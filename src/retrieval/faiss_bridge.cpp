// FAISS behind a C interface (see faiss_bridge.h): the only C++ in the project, kept to the
// calls the index file needs, every exception caught at this border.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include <faiss/IVFlib.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

extern "C" {
#include "vicreg/search.h"
#include "vicreg/status.h"
}
#include "faiss_bridge.h"

struct vr_faiss {
    faiss::Index *index;
};

// FAISS says "Error in <function> at <file>:<line>: <what>"; the user needs <what>.
static const char *brief(const char *msg)
{
    const char *at = std::strstr(msg, " at ");
    const char *colon = at ? std::strstr(at, ": ") : nullptr;
    return colon ? colon + 2 : msg;
}

// Runs fn, turning an exception into code (or VR_ERR_NOMEM) with FAISS's message.
template <class Fn>
static vr_status guarded(vr_status code, const char *what, Fn &&fn)
{
    try {
        fn();
        return VR_OK;
    } catch (const std::bad_alloc &) {
        return vr_fail(VR_ERR_NOMEM, "faiss", "%s: out of memory", what);
    } catch (const std::exception &e) {
        return vr_fail(code, "faiss", "%s: %s", what, brief(e.what()));
    }
}

// The index under a pre-transform (PCA, OPQ, ...), where the search parameters live.
static faiss::Index *unwrapped(faiss::Index *index)
{
    while (auto *pt = dynamic_cast<faiss::IndexPreTransform *>(index)) index = pt->index;
    return index;
}

static faiss::IndexHNSW *hnsw_of(const vr_faiss *f) { return dynamic_cast<faiss::IndexHNSW *>(unwrapped(f->index)); }

static faiss::IndexIVF *ivf_of(const vr_faiss *f) { return faiss::ivflib::try_extract_index_ivf(f->index); }

static vr_status wrap(faiss::Index *index, vr_faiss **out)
{
    *out = static_cast<vr_faiss *>(std::calloc(1, sizeof(vr_faiss)));
    if (!*out) {
        delete index;
        return vr_fail(VR_ERR_NOMEM, "faiss", "out of memory");
    }
    (*out)->index = index;
    return VR_OK;
}

extern "C" vr_status vr_faiss_create(const char *factory, int d, vr_metric metric, vr_faiss **out)
{
    *out = nullptr;
    if (d < 1) return vr_fail(VR_ERR_SHAPE, "faiss", "%s: dimension %d", factory, d);
    faiss::Index *index = nullptr;
    faiss::MetricType m = metric == VR_METRIC_L2 ? faiss::METRIC_L2 : faiss::METRIC_INNER_PRODUCT;
    VR_TRY(guarded(VR_ERR_ARG, factory, [&] { index = faiss::index_factory(d, factory, m); }));
    // Polysemous training reorders PQ codes for Hamming filtering (polysemous_ht), which no
    // search here uses, and in a FAISS built without hardware popcount it takes minutes.
    faiss::Index *inner = unwrapped(index);
    if (auto *ivfpq = dynamic_cast<faiss::IndexIVFPQ *>(faiss::ivflib::try_extract_index_ivf(inner)))
        ivfpq->do_polysemous_training = false;
    if (auto *pq = dynamic_cast<faiss::IndexPQ *>(inner)) pq->do_polysemous_training = false;
    return wrap(index, out);
}

extern "C" void vr_faiss_free(vr_faiss *f)
{
    if (!f) return;
    delete f->index;
    std::free(f);
}

extern "C" int vr_faiss_dim(const vr_faiss *f) { return f->index->d; }
extern "C" int64_t vr_faiss_count(const vr_faiss *f) { return f->index->ntotal; }
extern "C" vr_metric vr_faiss_metric(const vr_faiss *f)
{
    return f->index->metric_type == faiss::METRIC_L2 ? VR_METRIC_L2 : VR_METRIC_IP;
}
extern "C" int vr_faiss_needs_training(const vr_faiss *f) { return !f->index->is_trained; }
extern "C" int64_t vr_faiss_nlist(const vr_faiss *f)
{
    const faiss::IndexIVF *ivf = ivf_of(f);
    return ivf ? (int64_t)ivf->nlist : 0;
}
extern "C" int vr_faiss_has_ef_search(const vr_faiss *f) { return hnsw_of(f) != nullptr; }

extern "C" vr_status vr_faiss_train(vr_faiss *f, const float *x, int64_t n)
{
    return guarded(VR_ERR_SHAPE, "training", [&] { f->index->train(n, x); });
}

extern "C" vr_status vr_faiss_add(vr_faiss *f, const float *x, int64_t n)
{
    if (!f->index->is_trained) return vr_fail(VR_ERR_ARG, "faiss", "adding vectors: the index is not trained");
    return guarded(VR_ERR_ARG, "adding vectors", [&] { f->index->add(n, x); });
}

extern "C" vr_status vr_faiss_search(vr_faiss *f, const float *queries, int64_t nq, int k, int nprobe,
                                     int ef_search, float *scores, int64_t *ids)
{
    if (nprobe > 0) {
        faiss::IndexIVF *ivf = ivf_of(f);
        if (!ivf) return vr_fail(VR_ERR_ARG, "faiss", "nprobe %d: the index has no IVF lists", nprobe);
        ivf->nprobe = (size_t)nprobe < ivf->nlist ? (size_t)nprobe : ivf->nlist;
    }
    if (ef_search > 0) {
        faiss::IndexHNSW *hnsw = hnsw_of(f);
        if (!hnsw) return vr_fail(VR_ERR_ARG, "faiss", "efSearch %d: the index is not an HNSW graph", ef_search);
        hnsw->hnsw.efSearch = ef_search;
    }
    static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t), "FAISS ids are 64-bit");
    VR_TRY(guarded(VR_ERR_ARG, "search", [&] {
        f->index->search(nq, queries, k, scores, reinterpret_cast<faiss::Index::idx_t *>(ids));
    }));
    // FAISS leaves its heap's initial value (+-FLT_MAX) where nothing was found
    float worst = f->index->metric_type == faiss::METRIC_L2 ? INFINITY : -INFINITY;
    for (int64_t i = 0; i < nq * k; i++)
        if (ids[i] < 0) {
            ids[i] = -1;
            scores[i] = worst;
        }
    return VR_OK;
}

extern "C" vr_status vr_faiss_serialize(const vr_faiss *f, uint8_t **blob, size_t *len)
{
    *blob = nullptr;
    *len = 0;
    faiss::VectorIOWriter w;
    VR_TRY(guarded(VR_ERR_ARG, "serialising", [&] { faiss::write_index(f->index, &w); }));
    *blob = static_cast<uint8_t *>(std::malloc(w.data.size() ? w.data.size() : 1));
    if (!*blob) return vr_fail(VR_ERR_NOMEM, "faiss", "serialising: no room for %zu bytes", w.data.size());
    std::memcpy(*blob, w.data.data(), w.data.size());
    *len = w.data.size();
    return VR_OK;
}

extern "C" vr_status vr_faiss_deserialize(const uint8_t *blob, size_t len, vr_faiss **out)
{
    *out = nullptr;
    faiss::Index *index = nullptr;
    size_t used = 0;
    VR_TRY(guarded(VR_ERR_FORMAT, "reading the index", [&] {
        faiss::VectorIOReader r;
        r.data.assign(blob, blob + len);
        index = faiss::read_index(&r);
        used = r.rp;
    }));
    if (used != len) {
        delete index;
        return vr_fail(VR_ERR_FORMAT, "faiss", "reading the index: %zu bytes after its end", len - used);
    }
    if (index->metric_type != faiss::METRIC_L2 && index->metric_type != faiss::METRIC_INNER_PRODUCT) {
        delete index;
        return vr_fail(VR_ERR_FORMAT, "faiss", "reading the index: metric %d is neither L2 nor inner product",
                       (int)index->metric_type);
    }
    return wrap(index, out);
}
