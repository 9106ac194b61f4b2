// ClusterKV as a cache format: every token stays resident (fp16), keys are clustered per KV head,
// and each query attends to the sinks, the recent rows and the tokens of the clusters closest to
// it, within a token budget. Owns: the clustering, the recall and that sparse attention. Not:
// the kernels of the dense formats (kv/attend.h).
//
// After Liu et al. 2024 ("ClusterKV: manipulating LLM KV cache in semantic space for recallable
// compression"). Per sequence and layer, rows in position order (keys rotated at write, like the
// plain cache):
//   [P sinks: always attended] [clustered rows] [unclustered rows: always attended]
// At the end of a step, while the unclustered rows older than the last R hold >= M rows, the
// oldest M of them are clustered, per KV head, into M / c clusters by spherical k-means (cosine
// similarity; initial centroids the rows at j*M/k; 8 iterations; assignment ties: the lower
// cluster; an empty cluster keeps its centroid). Recall, per query and query head: clusters of
// its KV head ranked by q . centroid (equal: the older cluster first), whole clusters taken until
// their tokens reach BUDGET; attention is the exact softmax over the sinks, the recalled tokens
// and the unclustered rows the query's mask allows.
//
// Nothing is saved in memory (every row stays, plus the centroids and each row's cluster index);
// the point is attending to fewer rows. The share attended is (P + recent + about BUDGET) / T.
//
// Spec: clusterkv:BUDGET[,p=N][,r=N][,m=N][,c=N]   (defaults p=4, r=128, m=128, c=16)
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "aquakv/kv/kv_cache.h"

namespace aquakv {

struct ClusterKvOptions {
  int64_t budget = 512;  // recalled tokens per query head
  int64_t sinks = 4, recent = 128;
  int64_t chunk = 128;   // M: rows clustered at once
  int64_t per_cluster = 16;  // c: rows per cluster on average
};

std::unique_ptr<KvCache> make_clusterkv_cache(const KvShape& shape, const ClusterKvOptions& opt);

// The registry's entry: args = "BUDGET[,p=N][,r=N][,m=N][,c=N]".
std::unique_ptr<KvCache> make_clusterkv_from_spec(const std::string& args, const KvShape& shape);

// Rows attended / rows the queries' masks allowed, summed over every query and query head since
// the cache was made (-1 for other formats).
double clusterkv_attended_share(const KvCache& cache);

}  // namespace aquakv
