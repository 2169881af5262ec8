/* A C interface to the few FAISS calls the index needs (src/retrieval/faiss_bridge.cpp).
 *
 * Debian's libfaiss-dev ships FAISS as a static C++ library without its C API, so these
 * functions wrap the C++ classes: an index made by faiss::index_factory from a factory string
 * ("IVF256,Flat", "HNSW32", "IVF256,PQ16", ...), trained, filled, searched, and serialised to
 * a byte buffer. Every FAISS exception becomes a vr_status with FAISS's message. Only built
 * when VR_HAVE_FAISS is 1 (vr_config.h). A handle is used by one thread at a time: a search
 * sets the handle's nprobe or efSearch before it runs. */
#ifndef VR_FAISS_BRIDGE_H
#define VR_FAISS_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "vicreg/search.h"
#include "vicreg/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vr_faiss vr_faiss;

/* An empty index of dimension d for `factory` under metric (a vr_metric). */
vr_status vr_faiss_create(const char *factory, int d, vr_metric metric, vr_faiss **out);
void vr_faiss_free(vr_faiss *f);

int vr_faiss_dim(const vr_faiss *f);
int64_t vr_faiss_count(const vr_faiss *f);
vr_metric vr_faiss_metric(const vr_faiss *f);
/* 1 when the index still needs vr_faiss_train before vectors can be added. */
int vr_faiss_needs_training(const vr_faiss *f);
/* The IVF lists of the index (0 when it is not an IVF index). */
int64_t vr_faiss_nlist(const vr_faiss *f);
/* 1 when efSearch applies (an HNSW index or an IVF index with an HNSW quantiser). */
int vr_faiss_has_ef_search(const vr_faiss *f);

/* x (n, d) */
vr_status vr_faiss_train(vr_faiss *f, const float *x, int64_t n);
vr_status vr_faiss_add(vr_faiss *f, const float *x, int64_t n);

/* queries (nq, d) -> scores and ids (nq, k) as in search.h: best first, id -1 and the worst
 * score where fewer than k were found. nprobe / ef_search > 0 set FAISS's parameter of that
 * name first (VR_ERR_ARG when the index has no such parameter); 0 keeps the current one. */
vr_status vr_faiss_search(vr_faiss *f, const float *queries, int64_t nq, int k, int nprobe,
                          int ef_search, float *scores, int64_t *ids);

/* The index as bytes (*blob malloc'd, *len bytes) and back. */
vr_status vr_faiss_serialize(const vr_faiss *f, uint8_t **blob, size_t *len);
vr_status vr_faiss_deserialize(const uint8_t *blob, size_t len, vr_faiss **out);

#ifdef __cplusplus
}
#endif

#endif
