#!/usr/bin/env bash
# Spoken words: a labelled audio set of short English words, synthesised on this machine.
#
# usage: bash recipes/make_spoken_words.sh OUT_DIR [--clips-per-word N] [--seed S] [--jobs J]
#
# What it makes
#   OUT_DIR/wav/<word>/<word>-NNN.wav   16 kHz mono 16-bit PCM WAV, exactly 16000 frames (1 s)
#   OUT_DIR/labels.csv                  path,label,split (path relative to OUT_DIR,
#                                       split = train|test), the file training and evaluation read
#   OUT_DIR/clips.csv                   how every clip was made: accent, variant, every draw
#                                       (reverb = reverberance:HF damping:room scale:pre-delay ms:
#                                       wet dB, band_hz = low:high, noise = colour:SNR dB:offset
#                                       into the noise), the word's length and offset in samples
#
# Words: 37, in groups that differ by one sound, so that a representation has to hear the
#   difference: bat/bad/pat/pad/cap/cab, ship/sheep, bit/beat, pin/bin/pen, three/tree/free,
#   cold/gold/cult, coat/goat, fan/van, sip/zip, sink/think, light/right, full/fool,
#   mouse/mouth, fifteen/fifty, thirteen/thirty. Before anything is synthesised the script asks
#   espeak-ng for every word's phonemes in every accent and stops if two words coincide: in the
#   Caribbean voice "day" and "they" are both d'eI, which is why that pair is not here.
# Voices: a clip's voice is an accent (an espeak-ng language voice: 8 English ones, from
#   en-gb-scotland to en-us-nyc) combined with a variant (38 speaker variants: male m1-m8,
#   female f1-f5, the Klatt formant synthesiser's klatt-klatt4, whisper, whisperf, croak,
#   grandma, grandpa and named ones such as Annie or travis), 304 voices in all, each clip drawn
#   at random from them.
# Augmentations, drawn per clip from the seeded stream below: speaking rate 120-200 words/min
#   and base pitch 20-80 (espeak-ng -s, -p); then sox trims the synthesiser's silences, changes
#   speed by 0.90-1.12 (tempo and pitch together), resamples 22050 -> 16000 Hz, adds room
#   reverberation to 40 % of the clips (reverberance 10-80 %, HF damping 10-90 %, room scale
#   10-100 %, pre-delay 0-30 ms, wet gain -8-0 dB; a tail of up to 0.6 s, fading out),
#   band-limits 15 % (high-pass 80-300 Hz, low-pass 3-7 kHz), places the word at a random
#   offset in the second (silence around it, never cut: a word longer than 0.975 s is sped up
#   to fit, pitch kept), adds white, pink or brown noise to 50 % at 8-30 dB SNR (relative to
#   the word's own RMS), and scales the peak to -14 to -1 dBFS.
# Split: the test split holds out whole voices: every clip spoken with the held-out accent
#   (en-gb-scotland) or with one of the 6 held-out variants (m6, klatt3, f3, whisperf, Annie,
#   travis) is test, and no such clip is train; 80 of the 304 voices, 26 %. Each word gets the
#   same number of test clips, round(N * 80 / 304), so the split is balanced over labels.
# Determinism: the same seed gives the same files, byte for byte. All draws come from one
#   stream (Park-Miller, computed in awk with exact integer arithmetic, started from a SHA-256
#   of the seed), espeak-ng has no randomness, and every sox runs with -R, which seeds its
#   dither and noise generators with a fixed number; the noise of a clip differs from the next
#   one's because each clip cuts its second from a different offset of that fixed noise.
#   Byte identity holds for one version of espeak-ng and sox (Debian 12: 1.51, 14.4.2).
# Time: about 0.12 s of processor time per clip, mostly starting processes: the default 1480
#   clips take about 2 minutes on 2 cores. J worker processes (default: the number of cores)
#   take chunks of 20 clips in turn. Everything is written into a hidden folder next to OUT_DIR,
#   which is renamed to OUT_DIR only when every clip and labels.csv are complete, so an
#   interrupted run never leaves a set that looks whole.
# Needs espeak-ng and sox (`bash recipes/deps-audio` installs them).
set -euo pipefail
export LC_ALL=C # decimal points in awk and sox arguments, byte order in sorting

usage() {
  echo "usage: bash $0 OUT_DIR [--clips-per-word N] [--seed S] [--jobs J]" >&2
  exit 2
}

out_dir=""
clips_per_word=40
seed=0
jobs=$(nproc 2>/dev/null || echo 2)
while [ $# -gt 0 ]; do
  case "$1" in
    --clips-per-word) [ $# -ge 2 ] || usage; clips_per_word=$2; shift 2 ;;
    --seed) [ $# -ge 2 ] || usage; seed=$2; shift 2 ;;
    --jobs) [ $# -ge 2 ] || usage; jobs=$2; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) [ -z "$out_dir" ] || usage; out_dir=$1; shift ;;
  esac
done
[ -n "$out_dir" ] || usage
for v in clips_per_word seed jobs; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "--${v//_/-} must be a non-negative integer, not '${!v}'" >&2; exit 2; }
done
if [ "$clips_per_word" -lt 1 ] || [ "$jobs" -lt 1 ]; then
  echo "--clips-per-word and --jobs must be at least 1" >&2
  exit 2
fi

missing=()
for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]}. Install them with: sudo bash $(dirname "$0")/deps-audio" >&2
  echo "(or: sudo apt-get install -y --no-install-recommends espeak-ng sox)" >&2
  exit 1
fi

out_dir=${out_dir%/}
if [ -e "$out_dir" ]; then
  echo "$out_dir already exists; remove it or choose another OUT_DIR" >&2
  exit 1
fi

words=(bat bad pat pad cap cab ship sheep bit beat pin bin pen three tree free cold gold cult
       coat goat fan van sip zip sink think light right full fool mouse mouth
       fifteen fifty thirteen thirty)
accents=(en-gb en-us en-gb-scotland en-gb-x-gbclan en-gb-x-rp en-gb-x-gbcwmd en-029 en-us-nyc)
variants=(m1 m2 m3 m4 m5 m6 m7 m8 klatt klatt2 klatt3 klatt4 croak whisper grandpa Andy Alex
          benjamin edward norbert travis victor max rob
          f1 f2 f3 f4 f5 whisperf grandma Annie Alicia belinda linda steph aunty anika)
test_accents=(en-gb-scotland)
test_variants=(m6 klatt3 f3 whisperf Annie travis)

# Two words that one accent pronounces alike would give identical clips two labels.
for accent in "${accents[@]}"; do
  dup=$(printf '%s\n' "${words[@]}" | espeak-ng -q -x -v "$accent" | tr -d ' ' |
        paste - <(printf '%s\n' "${words[@]}") | sort | awk '$1 == p { print w "/" $2 " (" $1 ")" } { p = $1; w = $2 }')
  if [ -n "$dup" ]; then
    echo "espeak-ng voice $accent pronounces these words alike: $dup" >&2
    exit 1
  fi
done

start_s=$(date +%s)
parent=$(dirname "$out_dir")
mkdir -p "$parent"
tmp=$(mktemp -d "$parent/.$(basename "$out_dir").partial.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/wav" "$tmp/meta" "$tmp/scratch"
for w in "${words[@]}"; do mkdir -p "$tmp/wav/$w"; done

# The plan: one line per clip with every random draw, made in one pass so that the set depends
# on the seed alone and not on how the work is divided. Draws are made in the same order for
# every clip, used or not, so that changing one probability does not shift the others.
seed_state=$(( 16#$(printf 'spoken-words %s' "$seed" | sha256sum | cut -c1-7) % 2147483646 + 1 ))
awk -v state="$seed_state" -v n="$clips_per_word" -v words="${words[*]}" \
    -v accents="${accents[*]}" -v variants="${variants[*]}" \
    -v test_accents="${test_accents[*]}" -v test_variants="${test_variants[*]}" '
  function rnd() { state = (state * 16807) % 2147483647; return (state - 1) / 2147483646 }
  function uni(lo, hi) { return lo + (hi - lo) * rnd() }
  function pick(n) { return 1 + int(n * rnd()) }
  BEGIN {
    OFS = "\t"
    nw = split(words, W, " "); na = split(accents, A, " "); nv = split(variants, V, " ")
    split(test_accents, ta, " "); for (i in ta) held[ta[i]] = 1
    split(test_variants, tv, " "); for (i in tv) held[tv[i]] = 1
    for (a = 1; a <= na; a++) for (v = 1; v <= nv; v++) {
      if ((A[a] in held) || (V[v] in held)) { nte++; TE[nte] = A[a] "\t" V[v] }
      else { ntr++; TR[ntr] = A[a] "\t" V[v] }
    }
    n_test = int(n * nte / (nte + ntr) + 0.5)
    colours[1] = "whitenoise"; colours[2] = "pinknoise"; colours[3] = "brownnoise"
    for (w = 1; w <= nw; w++) for (c = 0; c < n; c++) {
      split_ = c < n_test ? "test" : "train"
      voice = split_ == "test" ? TE[pick(nte)] : TR[pick(ntr)]
      wpm = int(uni(120, 201)); pitch = int(uni(20, 81)); speed = uni(0.90, 1.12)
      reverb = sprintf("%d:%d:%d:%d:%.1f", uni(10, 80), uni(10, 90), uni(10, 100), uni(0, 30), uni(-8, 0))
      if (rnd() >= 0.40) reverb = "-"
      band = sprintf("%d:%d", uni(80, 300), uni(3000, 7000))
      if (rnd() >= 0.15) band = "-"
      noise = sprintf("%s:%.1f:%d", colours[pick(3)], uni(8, 30), int(uni(0, 160000)))
      if (rnd() >= 0.50) noise = "-"
      peak_db = uni(-14, -1); place = rnd()
      path = sprintf("wav/%s/%s-%03d.wav", W[w], W[w], c)
      printf "%s\t%s\t%s\t%s\t%d\t%d\t%.3f\t%s\t%s\t%s\t%.1f\t%.6f\n", path, W[w], split_, voice,
             wpm, pitch, speed, reverb, band, noise, peak_db, place
    }
  }' > "$tmp/plan.tsv"

# The three noises, 11 s each, made once: sox -R would give every clip the same noise sequence
# anyway, so each clip takes its second from its own offset into these. The SNR is set from the
# RMS of the whole file, which one second of it matches to within 1.3 dB (brown noise), 1 dB
# (pink), 0.1 dB (white).
mkdir -p "$tmp/noise"
for colour in whitenoise pinknoise brownnoise; do
  sox -R -V1 -r 16000 -c 1 -n -e floating-point -b 32 "$tmp/noise/$colour.wav" \
    synth 176000s "$colour" stat 2> "$tmp/noise/$colour.stat"
  awk '/^RMS +amplitude/ { print $3 }' "$tmp/noise/$colour.stat" > "$tmp/noise/$colour.rms"
done

# One clip: synthesise, shape the word, then place it in a second of silence or noise.
# Intermediates are 32-bit float so that only the final write quantises (with -R dither).
# Few processes per clip: starting one costs more here than the audio work it does.
make_clip() {
  local path=$1 word=$2 accent=$4 variant=$5 wpm=$6 pitch=$7 speed=$8 reverb=$9
  local band=${10} noise=${11} peak_db=${12} place=${13} s=${14}
  local fx=() band_fx f nz=() noise_rms=1 n before after vol
  espeak-ng -v "$accent+$variant" -s "$wpm" -p "$pitch" -w "$s/raw.wav" "$word"
  if [ "$band" != - ]; then
    IFS=: read -r -a f <<< "$band"
    band_fx=(sinc "${f[0]}-${f[1]}")
  else
    band_fx=()
  fi
  # -55 dB below full scale after normalising keeps the faint onset of a fricative (f, th, s)
  fx=(norm -1 silence 1 0.005 -55d reverse silence 1 0.005 -55d reverse speed "$speed" rate -v 16000)
  # the band limit (the microphone) comes after the room, so here only when there is no room
  [ "$reverb" != - ] || fx+=("${band_fx[@]}")
  sox -R -V1 "$s/raw.wav" -r 16000 -c 1 -e floating-point -b 32 "$s/word.wav" "${fx[@]}" norm -1 stat 2> "$s/stat"

  if [ "$noise" != - ]; then
    IFS=: read -r -a nz <<< "$noise"
    read -r noise_rms < "$tmp/noise/${nz[0]}.rms"
  fi
  # n: the word's length in samples; before: silence ahead of it; vol: the noise's volume in the
  # mix, for the drawn SNR against the word's RMS, with the word at 0.5 so that the sum cannot clip
  calc() {
    awk -v place="$place" -v snr_db="${nz[1]:-0}" -v noise_rms="$noise_rms" '
      /^Samples read/ { n = $3 } /^RMS +amplitude/ { rms = $3 }
      END { printf "%d %d %.6f\n", n, place * (16000 - n), 0.5 * rms / noise_rms * 10 ^ (-snr_db / 20) }' "$s/stat" > "$s/calc"
    read -r n before vol < "$s/calc"
  }
  calc
  # A slow voice can outlast the second: speed it up (pitch kept) rather than cut it, so that
  # every clip holds the whole word.
  if [ "$n" -gt 15600 ]; then
    sox -R -V1 "$s/word.wav" "$s/fit.wav" tempo -s "$(awk -v n="$n" 'BEGIN { printf "%.4f", n / 15400 }')" stat 2> "$s/stat"
    mv "$s/fit.wav" "$s/word.wav"
    calc
    [ "$n" -le 15600 ] || { echo "$path: the word lasts $n samples after fitting, over 15600" >&2; return 1; }
  fi
  if [ "$reverb" != - ]; then
    IFS=: read -r -a f <<< "$reverb"
    # The room's tail rings on for up to 0.6 s but takes at most half of the room the word
    # leaves in the second, so that the word's place in it still varies; it fades out over its
    # second half rather than stopping dead. Reverb makes two channels of one: channels 1
    # averages them back before stat counts.
    local tail=$(((15600 - n) / 2 < 9600 ? (15600 - n) / 2 : 9600))
    sox -R -V1 "$s/word.wav" "$s/room.wav" gain -6 pad 0 "${tail}s" \
      reverb "${f[@]:0:3}" 100 "${f[3]}" "${f[4]}" channels 1 \
      fade q 0 "$((n + tail))s" "$((tail / 2))s" "${band_fx[@]}" norm -1 stat 2> "$s/stat"
    mv "$s/room.wav" "$s/word.wav"
    calc
  fi
  after=$((16000 - n - before))
  if [ "$noise" = - ]; then
    sox -R -V1 "$s/word.wav" -b 16 -e signed-integer "$tmp/$path" pad "${before}s" "${after}s" gain -n "$peak_db"
  else
    # the word, delayed to its place in the noise's second, mixed with the whole noise file
    # (-m pads the shorter input at its end); then that second is cut out
    local word_q
    printf -v word_q %q "$s/word.wav"
    sox -R -V1 -m -v 0.5 "|sox -R -V1 $word_q -p pad $((nz[2] + before))s" \
      -v "$vol" "$tmp/noise/${nz[0]}.wav" -b 16 -e signed-integer "$tmp/$path" \
      trim "${nz[2]}s" 16000s gain -n "$peak_db"
  fi
  printf '%s\t%s\t%s\n' "$path" "$n" "$before"
}

# A chunk of consecutive plan lines, so that the per-chunk records concatenate in plan order.
make_chunk() {
  local chunk=$1 first=$(($1 * chunk_clips + 1)) last=$((($1 + 1) * chunk_clips))
  local s="$tmp/scratch/$chunk" line
  mkdir "$s" # not -p: once an interrupted run has removed $tmp, a late chunk must fail
  sed -n "${first},${last}p" "$tmp/plan.tsv" | while IFS= read -r line; do
    IFS=$'\t' read -r -a f <<< "$line"
    make_clip "${f[@]}" "$s"
  done > "$tmp/meta/$chunk.tsv"
  rm -r "$s"
}

total=$(wc -l < "$tmp/plan.tsv")
chunk_clips=20
chunks=$(((total + chunk_clips - 1) / chunk_clips))
export tmp chunk_clips
export -f make_clip make_chunk
echo "making $total clips (${#words[@]} words x $clips_per_word) with $jobs jobs in $tmp"
# shellcheck disable=SC2016 # $1 belongs to the inner bash
seq 0 $((chunks - 1)) | xargs -P "$jobs" -n 1 bash -c 'set -euo pipefail; make_chunk "$1"' _

for ((c = 0; c < chunks; c++)); do cat "$tmp/meta/$c.tsv"; done > "$tmp/made.tsv"
[ "$(wc -l < "$tmp/made.tsv")" -eq "$total" ] || { echo "only $(wc -l < "$tmp/made.tsv") of $total clips were made" >&2; exit 1; }

{
  echo "path,label,split"
  cut -f1-3 "$tmp/plan.tsv" | tr '\t' ','
} > "$tmp/labels.csv"
{
  echo "path,label,split,accent,variant,words_per_min,pitch,speed,reverb,band_hz,noise,peak_db,word_samples,offset_samples"
  paste "$tmp/plan.tsv" "$tmp/made.tsv" | cut -f1-12,15- | tr '\t' ','
} > "$tmp/clips.csv"
rm -r "$tmp/plan.tsv" "$tmp/made.tsv" "$tmp/meta" "$tmp/scratch" "$tmp/noise"

# 16000 frames of 16-bit mono PCM: sox's 44-byte header and 32000 bytes of samples
wrong=$(find "$tmp/wav" -name '*.wav' ! -size 32044c | head -3)
[ -z "$wrong" ] || { echo "clips that are not 16000 frames of 16-bit mono: $wrong ..." >&2; exit 1; }
chmod "$(umask -S)" "$tmp" # mktemp made it private

mv -T "$tmp" "$out_dir"
trap - EXIT
n_test=$(grep -c ',test$' "$out_dir/labels.csv" || true)
n_voices=$(tail -n +2 "$out_dir/clips.csv" | cut -d, -f4,5 | sort -u | wc -l)
echo "$out_dir: $total clips, ${#words[@]} words, $n_voices voices, $((total - n_test)) train / $n_test test," \
     "$(($(date +%s) - start_s)) s"
