#!/usr/bin/env bash
# Quickstart: audio joint embedding, then retrieval, in under 20 minutes on two idle CPU cores.
#
# Installs what is missing (.ci/deps and recipes/deps-audio, as root or through sudo), builds a
# release build in build/, makes the spoken-words set (recipes/make_spoken_words.sh: 37 words,
# held-out voices), trains the waveform and spectrogram encoders of recipes/spoken_words.ini
# for a few minutes, embeds the held-out split with each branch, builds a search index over the
# waveform embeddings, answers a few queries with audio files, and prints label retrieval and
# cross-modal recall beside the baselines that involve no training (the same networks at their
# seeded initialisation, and the mean log-mel of each clip). Each run gets a directory of its
# own under runs/, so running this again never overwrites an earlier result.
#
# QUICKSTART_MINUTES (default 7) sets the training time.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${QUICKSTART_MINUTES:-7}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then bash "$@"
  elif command -v sudo >/dev/null; then sudo bash "$@"
  else bash "$@" # succeeds without root when nothing is missing
  fi
}
as_root .ci/deps
as_root recipes/deps-audio

if [ ! -f build/build.ninja ]; then
  meson setup build --buildtype=release
fi
ninja -C build

vicreg=build/src/cli/vicreg
data=data/spoken_words
if [ ! -f "$data/labels.csv" ]; then
  echo "== making the spoken-words set in $data"
  bash recipes/make_spoken_words.sh "$data"
fi

run="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$run"
echo "== training recipes/spoken_words.ini for $minutes minutes -> $run"
start=$(date +%s)
"$vicreg" train recipes/spoken_words.ini --set train.run_dir="$run" --set train.max_minutes="$minutes" \
  --set eval.linear=none
ckpt="$run/checkpoint.safetensors"

echo "== embedding the held-out voices: representations of each branch, and the expander's"
echo "   embeddings where the two branches meet"
for branch in wave spec; do
  "$vicreg" embed "$ckpt" --branch "$branch" --normalize "$data/labels.csv" --select test \
    -o "$run/test_$branch.npy"
  "$vicreg" embed "$ckpt" --branch "$branch" --output embedding --normalize "$data/labels.csv" --select test \
    -o "$run/test_${branch}_emb.npy"
done

echo "== an index over the spectrogram representations (unit norm: inner product = cosine), and"
echo "   three queries in voices of the training split"
"$vicreg" index build "$run/test_spec.npy" -o "$run/test_spec.index"
for word in ship sheep thirteen; do
  query="$data/$(awk -F, -v w="$word" '$2 == w && $3 == "train" { print $1; exit }' "$data/labels.csv")"
  "$vicreg" search "$run/test_spec.index" --query "$query" -k 5
done

echo
echo "== label retrieval on the held-out voices (representations), beside the untrained baselines"
"$vicreg" eval retrieval "$run/test_wave.npy" --baselines --json "$run/retrieval_wave.json"
"$vicreg" eval retrieval "$run/test_spec.npy" --baselines --json "$run/retrieval_spec.json"
echo "== cross-modal: a clip's waveform embedding finds the same clip among the spectrogram ones"
"$vicreg" eval retrieval "$run/test_wave_emb.npy" --paired "$run/test_spec_emb.npy" --baselines \
  --json "$run/retrieval_crossmodal.json"
echo "  training, embedding and evaluation took $(( $(date +%s) - start )) s; all of it is in $run/"
