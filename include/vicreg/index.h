/* A searchable index of an embedding set, and its file.
 *
 * Two kinds: "flat", exact search on sgemm tiles (search.h), and any FAISS index a factory
 * string names ("IVF256,Flat", "HNSW32", "IVF256,PQ16", ...) when the build has FAISS
 * (VR_HAVE_FAISS in vr_config.h; without it such a kind is VR_ERR_UNSUPPORTED). An index
 * keeps what an answer needs besides an id: the set's rows (file, start, end, label) and its
 * JSON settings (checkpoint, branch, output, normalize, pool, window, hop), so a search can
 * embed audio queries as the set was embedded.
 *
 * The file is one safetensors file (safetensors.h), written atomically:
 *   vectors      F32 (count, dim)   flat: the vectors
 *   faiss        U8 (bytes)         FAISS kinds: the serialised FAISS index
 *   rows.start   F64 (count)        each row's window in seconds of its file,
 *   rows.end     F64 (count)
 *   rows.file    U8 (bytes)         count NUL-terminated file names, in row order
 *   rows.label   U8 (bytes)         count NUL-terminated labels ("" when unknown)
 *   __metadata__ format "vicreg-index", version "1", metric "ip" | "l2", kind, dim, count,
 *                nprobe, ef_search (search defaults, 0: FAISS's), crc32 (hex, zlib's CRC-32
 *                of the tensors' bytes in the order above) and settings (the JSON, if any)
 * The rows are all there or all absent. Loading checks every fact of that list and names the
 * file and what is wrong.
 *
 * An index is used by one thread at a time (a search reuses the index's buffers); its search
 * runs on omp_get_max_threads() threads as they were when it was built or loaded. */
#ifndef VICREG_INDEX_H
#define VICREG_INDEX_H

#include <stdint.h>

#include "vicreg/embedding_set.h"
#include "vicreg/search.h"
#include "vicreg/status.h"

typedef struct vr_index vr_index;

typedef struct vr_index_config {
    vr_metric metric;
    const char *factory; /* "Flat" (exact search) or a FAISS factory string */
    int nprobe;          /* IVF lists visited per query, the stored default; 0: FAISS's (1) */
    int ef_search;       /* HNSW candidate list of a query, the stored default; 0: FAISS's (16) */
} vr_index_config;

/* Inner product, "Flat", FAISS's search parameters. */
vr_index_config vr_index_defaults(void);

/* An index of x (n, d), which is copied or added to FAISS. rows (n) may be NULL (answers then
 * name ids only); settings, a JSON object's text, may be NULL. FAISS kinds that need training
 * are trained on all of x. */
vr_status vr_index_build(const float *x, int64_t n, int d, const vr_embedding_row *rows,
                         const char *settings, const vr_index_config *cfg, vr_index **out);
vr_status vr_index_save(vr_index *ix, const char *path);
vr_status vr_index_load(const char *path, vr_index **out);
void vr_index_free(vr_index *ix);

int vr_index_dim(const vr_index *ix);
int64_t vr_index_count(const vr_index *ix);
vr_metric vr_index_metric(const vr_index *ix);
/* "flat" or the FAISS factory string */
const char *vr_index_kind(const vr_index *ix);
/* The settings JSON text, NULL when none. */
const char *vr_index_settings(const vr_index *ix);
/* Row id's file, window and label; NULL when the index has no rows or id is out of range. */
const vr_embedding_row *vr_index_row(const vr_index *ix, int64_t id);

/* Replaces the search defaults of a FAISS index (0 keeps one); VR_ERR_ARG when the kind has
 * no such parameter (nprobe: IVF kinds; ef_search: HNSW kinds). */
vr_status vr_index_set_search_params(vr_index *ix, int nprobe, int ef_search);

/* The k best rows for each of queries (nq, qdim): scores and ids (nq, k) as in search.h.
 * qdim must be the index's dimension (VR_ERR_SHAPE naming both otherwise). */
vr_status vr_index_search(vr_index *ix, const float *queries, int64_t nq, int qdim, int k,
                          float *scores, int64_t *ids);

/* Queries from a .npy file for this index: (nq, dim) float32, or one query of rank 1 (dim).
 * *queries is vr_alloc'd. A wrong dtype, rank or dimension is an error naming the file. */
vr_status vr_index_read_queries(const vr_index *ix, const char *npy_path, float **queries,
                                int64_t *nq);

#endif
