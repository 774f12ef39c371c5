// The configuration heuristic of the sm_90a FP8 GEMM, for every kind: the config tables (built from
// the X-macro lists of sm90_fp8_gemm_configs.cuh, names included), the cost model, the pickers, the
// persistent-grid rule and the raster band. The entry points (sm90_fp8_gemm_entry.cu) validate the
// arguments and launch what plan_* returns.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "sm90_fp8_gemm_configs.cuh"
#include "sm90_fp8_gemm_heuristics.h"
#include "sm90_fp8_gemm_launch.cuh"

namespace torch_fp8gemm::sm90 {

TORCH_FP8GEMM_DENSE_CONFIGS(TORCH_FP8GEMM_DECLARE_DENSE)
TORCH_FP8GEMM_GROUPED_CONFIGS(TORCH_FP8GEMM_DECLARE_GROUPED)
TORCH_FP8GEMM_DENSE_1X128_CONFIGS(TORCH_FP8GEMM_DECLARE_DENSE_1X128)

namespace {

// mc2b: 2-CTA clusters sharing B; mc1: single CTAs.
std::string config_name(const char* prefix, int bm, int bn, int cm, int stages) {
  return std::string(prefix) + "bm" + std::to_string(bm) + "_bn" + std::to_string(bn) + "_s" + std::to_string(stages) +
         (cm == 2 ? "_mc2b" : "_mc1");
}

#define TORCH_FP8GEMM_SHAPE_FIELDS(BM, BN, CM, KIND) \
  BM, BN, CM, GemmShape<BM, BN, KIND>::kStages, GemmShape<BM, BN, KIND>::kBoxSlots
#define TORCH_FP8GEMM_DENSE_ENTRY(BM, BN) \
  {TORCH_FP8GEMM_SHAPE_FIELDS(BM, BN, 1, GemmKind::kDense), &launch_dense<BM, BN>, nullptr, nullptr},
#define TORCH_FP8GEMM_GROUPED_ENTRY(BM, BN, CM)                                                                   \
  {TORCH_FP8GEMM_SHAPE_FIELDS(BM, BN, CM, GemmKind::kGroupedContiguous), nullptr, &launch_contiguous<BM, BN, CM>, \
   &launch_masked<BM, BN, CM>},
#define TORCH_FP8GEMM_DENSE_1X128_ENTRY(BM, BN) \
  {TORCH_FP8GEMM_SHAPE_FIELDS(BM, BN, 1, GemmKind::kDense1x128), &launch_dense_1x128<BM, BN>, nullptr, nullptr},
const ConfigEntry kDenseConfigs[] = {TORCH_FP8GEMM_DENSE_CONFIGS(TORCH_FP8GEMM_DENSE_ENTRY)};
const ConfigEntry kGroupedConfigs[] = {TORCH_FP8GEMM_GROUPED_CONFIGS(TORCH_FP8GEMM_GROUPED_ENTRY)};
const ConfigEntry kDense1x128Configs[] = {TORCH_FP8GEMM_DENSE_1X128_CONFIGS(TORCH_FP8GEMM_DENSE_1X128_ENTRY)};
#undef TORCH_FP8GEMM_DENSE_ENTRY
#undef TORCH_FP8GEMM_GROUPED_ENTRY
#undef TORCH_FP8GEMM_DENSE_1X128_ENTRY
#undef TORCH_FP8GEMM_SHAPE_FIELDS

template <size_t N>
std::vector<std::string> names_of(const ConfigEntry (&table)[N], const char* prefix) {
  std::vector<std::string> v;
  for (const ConfigEntry& c : table) v.push_back(config_name(prefix, c.block_m, c.block_n, c.cluster_m, c.stages));
  return v;
}

// The shape a plan is made for: m_blocks_of(bm) row blocks (dense: ceil(m / bm); grouped: summed
// over the experts), n columns, K blocks, output element size, SMs.
struct Problem {
  int64_t m, n, k;
  int64_t batches;        // copies of the [m, n] grid (K groups of the K-grouped GEMM), or experts
  int64_t rows_per_batch; // rows per copy: m (dense), the expected rows per expert (grouped)
  int out_bytes;
  int num_sms;
  bool grouped;
};

// Tiles of a configuration, counting the phantom tile of a cluster pair at an odd edge (it occupies
// an SM like a real one).
int64_t num_blocks(const ConfigEntry& c, const Problem& p) {
  const int64_t m_blocks = ceil_div<int64_t>(ceil_div<int64_t>(p.rows_per_batch, c.block_m), c.cluster_m) * c.cluster_m;
  return p.batches * m_blocks * ceil_div<int64_t>(p.n, c.block_n);
}

// Cost model (arbitrary units). The tensor work and the HBM traffic are the same for every
// configuration; what differs is the traffic each tile pulls through L2 (A and B panels, B halved
// where a cluster multicasts it, plus the output) and through the SM's shared memory (operand
// loads, the wgmma's reads of a 64-row A slice and of B, the output), each at its bandwidth per cycle
// (L2 ~6150 B/cycle for the chip, shared memory 128 B/cycle per SM), the larger of the two divided by
// how full the last wave of tiles is. Multicast only pays with more than one wave of tiles.
double cost(const ConfigEntry& c, const Problem& p) {
  const int64_t blocks = num_blocks(c, p);
  const int64_t waves = ceil_div<int64_t>(blocks, p.num_sms);
  const double k = static_cast<double>(p.k);
  const double out = static_cast<double>(c.block_m) * c.block_n * p.out_bytes;
  const double l2 = k * (c.block_m + static_cast<double>(c.block_n) / c.cluster_m) + out;
  const double smem = k * (c.block_m + c.block_n) + k * (std::max(64, c.block_m) + c.block_n) + 2 * out;
  const double l2_cycles = l2 * blocks / std::min(64.0 * p.num_sms, 8e6 / 1.3e3);
  const double smem_cycles = smem * blocks / (128.0 * p.num_sms);
  const double wave_efficiency = static_cast<double>(blocks) / (static_cast<double>(waves) * p.num_sms);
  if (c.cluster_m > 1 && waves <= 1) return 1e300;
  return std::max(l2_cycles, smem_cycles) / wave_efficiency;
}

// Candidates: the pipeline must be deep enough to hide TMA latency (3 stages, 4 for small tiles),
// 16- and 32-row tiles only where they hold all of m. Ties keep the candidate met first, in the
// order (no cluster, B shared) x BLOCK_M (64, 128, 16, 32, 256) x BLOCK_N ascending.
int rank_key(const ConfigEntry& c) {
  const int cluster = c.cluster_m == 2 ? 1 : 0;
  const int bm = c.block_m == 64 ? 0 : c.block_m == 128 ? 1 : c.block_m == 16 ? 2 : c.block_m == 32 ? 3 : 4;
  return (cluster * 8 + bm) * 1024 + c.block_n;
}

template <size_t N>
int pick(const ConfigEntry (&table)[N], const Problem& p) {
  int best = -1;
  double best_cost = 0.0;
  for (int i = 0; i < static_cast<int>(N); ++i) {
    const ConfigEntry& c = table[i];
    if (c.stages < 3 || (c.block_m * c.block_n < 128 * 192 && c.stages < 4)) continue;
    if (c.block_m < 64 && p.rows_per_batch > c.block_m) continue;
    // Dense widths 80, 112 and 144 only for m <= 128, where B's bytes bound the time: their tiles
    // straddle a 128-column scale block at 8 offsets, so the promotion selects a B scale per 8-column
    // group and K block (num_former at run time: ~2x its instructions). With more rows they run 10-50%
    // behind 96 and 128 at the same BLOCK_M (H100, forced, M-major scales, us, 112 / 128: 512x4096x4096
    // 64-row 30.9 / 20.4, 256x4096x11008 48.5 / 31.6, 512x7168x2048 24.9 / 21.1, 1024x11008x4096
    // 256-row 81.7 / 76.7, 8192^3 128-row 1141 / 774), a cost the model does not see.
    if (!p.grouped && c.block_n % 32 != 0 && c.block_n > 64 && p.rows_per_batch > 128) continue;
    // Grouped 192-wide tiles at K < 4096 only for experts of >= 1024 rows (H100, forced, interleaved,
    // N x K 7168x2048, M-major scales, TFLOP/s of 128x192 vs 128x128: 8 x 4096 rows 1185 vs 1091,
    // 4 x 8192 1206 vs 1151, masked 1 x 1024 rows 1008 vs 889, but 4 x 256 rows 642 vs 701, 8 x 64
    // rows 274 vs 294).
    if (p.grouped && c.block_n > 160 && p.k < 4096 && p.rows_per_batch < 1024) continue;
    // Grouped 256-row tiles for experts of >= 2048 rows, in place of the B-shared pairs (H100, forced,
    // interleaved, M-major scales, TFLOP/s of 256x128 vs 128x192 pairs vs 128x192: 4 x 8192 rows at
    // N x K 4096x7168 1285 vs 1221 vs 1225, 8 x 4096 rows 1252 vs 1173 vs 1185; at 7168x2048 1256 and
    // 1251 vs 1194 and 1185 single). Not for smaller experts: the cost model does not count the empty
    // rows of a 256-row tile over a few hundred rows.
    const bool large_experts = p.grouped && p.rows_per_batch >= 2048;
    if (p.grouped && c.block_m == 256 && !large_experts) continue;
    if (large_experts && c.cluster_m > 1) continue;
    if (p.num_sms % c.cluster_m != 0) continue;
    // Grouped B-shared pairs at K >= 4096 only (H100, forced, 128x192 pairs vs single: masked 32 x 192
    // rows at 6144x7168 852 vs 794 TFLOP/s, 8 x 4096 rows at 4096x7168 1173 vs 1137; at K = 2048
    // masked 1 x 1024 rows 969 vs 1014, 4 x 256 rows 541 vs 640). The dense tables hold no clusters.
    if (c.cluster_m > 1 && p.k < 4096) continue;
    const double t = cost(c, p);
    if (best < 0 || t < best_cost || (t == best_cost && rank_key(c) < rank_key(table[best]))) best = i, best_cost = t;
  }
  if (best < 0) throw_error("no configuration fits m=" + std::to_string(p.m) + " n=" + std::to_string(p.n));
  return best;
}

// Persistent grid: one CTA per SM (whole clusters), no more CTAs than tiles. With K >= 2048 the
// fewest CTAs that keep the same number of tile waves (512 tiles: 128 CTAs x 4 waves, not 132 with
// 16 idle in the last wave): the GPU runs at its power limit on these compute-bound shapes and unused
// SMs let the busy ones clock higher (4096x4096x7168: +7% on the H200).
// Raster band (DenseScheduler): 8 or 16 m-blocks, whichever keeps fewer rows of A and B in flight
// across the SMs (m-blocks of the band x their rows + n-blocks across x theirs).
LaunchShape launch_shape(const ConfigEntry& c, const Problem& p, int64_t tiles, bool trim) {
  const int64_t cluster_tiles = std::max<int64_t>(1, ceil_div<int64_t>(tiles, c.cluster_m));
  int64_t clusters = std::min<int64_t>(cluster_tiles, std::max(1, p.num_sms / c.cluster_m));
  if (trim && p.k >= 2048) clusters = ceil_div<int64_t>(cluster_tiles, ceil_div<int64_t>(cluster_tiles, clusters));
  int band = 8;
  if (16 * c.block_m + ceil_div(p.num_sms, 16) * c.block_n < 8 * c.block_m + ceil_div(p.num_sms, 8) * c.block_n) band = 16;
  return LaunchShape{static_cast<int>(clusters * c.cluster_m), band};
}

Problem dense_problem(const DenseGemmParams& p) {
  const int64_t groups = p.k_block_bounds != nullptr ? std::max(1, p.num_k_groups) : 1;
  // K-grouped: each group's K range is about k / groups blocks.
  return Problem{p.m, p.n, p.k / groups, groups, p.m, p.out_kind == OutKind::kFP32 ? 4 : 2, std::max(1, p.num_sms), false};
}

}  // namespace

// K-major A scales in place or an M-major copy. The copy costs ~2 us plus its bytes at ~3 TB/s.
// Dense tiles of <= 128 rows: the in-place load slows the kernel by ~6% where it is compute-bound
// (128x128 at 4096x4096x7168: 169 us M-major, 174 in place), so in place where that tax (6% of the
// flops at 1200 TFLOP/s) is the smaller: 512x4096x7168 in place 24.8 us, copied 26.8; 1024x4096x7168
// 47.6 either way. Dense 256x128 tiles: no tax measured (in place 0-3% faster than copied on the
// M >= 4096 shapes that take them, H100): always in place. Grouped: no tax measured (contiguous
// 128x128 at 4x8192 / 8x4096 rows: in place 1-3% faster on 3 of 4 shapes), and a masked copy moves
// the whole capacity (32 experts x 192 rows of 4096, 7168x6144: 0.830 of DeepGEMM in place, 0.772
// copied): always in place. Either way only where the configuration's ring holds the boxes.
// scale_rows: rows of the scale tensor, rows: those computed.
bool k_major_in_place(const ConfigEntry& c, bool grouped, int64_t scale_rows, int64_t rows, int64_t n, int64_t k) {
  const double copy_us = 2.0 + 8.0 * static_cast<double>(scale_rows) * ceil_div<int64_t>(k, 128) / 3e6;
  const double tax_us = grouped || c.block_m == 256 ? 0.0 : 0.06 * 2.0 * static_cast<double>(rows) * n * k / 1.2e9;
  return tax_us <= copy_us && k_major_ring_holds(c.box_slots, c.stages, ceil_div<int64_t>(k, 128));
}

template <size_t N>
static int forced_or(const ConfigEntry (&table)[N], int forced, const Problem& p) {
  if (forced >= static_cast<int>(N)) throw_error("forced_config " + std::to_string(forced) + " out of range");
  return forced >= 0 ? forced : pick(table, p);
}

Plan plan_dense(const DenseGemmParams& p) {
  const Problem pr = dense_problem(p);
  const int idx = forced_or(kDenseConfigs, p.forced_config, pr);
  const ConfigEntry& c = kDenseConfigs[idx];
  return Plan{idx, &c, launch_shape(c, pr, num_blocks(c, pr), true)};
}

Plan plan_dense_1x128(const DenseGemmParams& p) {
  const Problem pr = dense_problem(p);
  const int idx = forced_or(kDense1x128Configs, p.forced_config, pr);
  const ConfigEntry& c = kDense1x128Configs[idx];
  return Plan{idx, &c, launch_shape(c, pr, num_blocks(c, pr), true)};
}

Plan plan_grouped(const GroupedGemmParams& p) {
  const DenseGemmParams& g = p.gemm;
  // expected_m is a hint: experts vary around it, so the tile count is taken at 15% more rows.
  const int64_t rows = std::max<int64_t>(1, p.expected_m > 0 ? p.expected_m : g.m / p.num_groups);
  const Problem pr{g.m, g.n, g.k, p.num_groups, rows + rows * 15 / 100, g.out_kind == OutKind::kFP32 ? 4 : 2,
                   std::max(1, g.num_sms), true};
  const int idx = forced_or(kGroupedConfigs, g.forced_config, pr);
  const ConfigEntry& c = kGroupedConfigs[idx];
  // The expert sizes live on the device: the grid is sized for the bound reached when every expert's
  // rows start a fresh m-block (and, with B-shared pairs, end with a phantom one).
  const int64_t tiles = (ceil_div<int64_t>(g.m, c.block_m) + p.num_groups * c.cluster_m) * ceil_div<int64_t>(g.n, c.block_n);
  return Plan{idx, &c, launch_shape(c, pr, tiles, false)};
}

const std::vector<std::string>& dense_config_names() {
  static const std::vector<std::string> v = names_of(kDenseConfigs, "");
  return v;
}
const std::vector<std::string>& grouped_config_names() {
  static const std::vector<std::string> v = names_of(kGroupedConfigs, "grouped_");
  return v;
}
const std::vector<std::string>& dense_1x128_config_names() {
  static const std::vector<std::string> v = names_of(kDense1x128Configs, "dense_1x128_");
  return v;
}

}  // namespace torch_fp8gemm::sm90
