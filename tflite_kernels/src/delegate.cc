// The TFLite external-delegate plugin: claims CONV_2D / FULLY_CONNECTED nodes
// with constant float32 (or int8, per-channel quantized) 1xN block-sparse
// filters and runs them with the packed micro-kernels. Everything else stays
// with TFLite (and XNNPACK).
//
// Plugin ABI (tensorflow/lite/delegates/external/README.md):
//   TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values,
//                                                 size_t n, void (*report_error)(const char*));
//   void tflite_plugin_destroy_delegate(TfLiteDelegate*);
// Options (all strings): num_threads (>= 1), min_sparsity (in [0, 1]),
// min_sparsity_int8 (in [0, 1]: the same for int8 nodes),
// width_aware (0|1, default 1: raise the threshold for N narrower than the
// kernel's vectors, threshold = 1 - (1 - min_sparsity) * lane_fraction),
// isa (auto|scalar|avx2|avx512|neon), report_path (JSON written at Prepare),
// profile_path (JSON of per-node invoke times, rewritten each time a partition
// is freed, i.e. complete once the interpreter is gone),
// log (0|1: one line per CONV_2D / FULLY_CONNECTED node on stderr; 2: also
// per-node invoke times when the partition is freed),
// cost_model (0|1, default 1: decline a 1x16 node whose rows are so short that
// the kernel is estimated slower than dense XNNPACK, see EstimatedCostRatio),
// fuse_residual (0|1, default 1: also claim a float32 ADD of two same-shape
// tensors one of which comes only from a claimed CONV_2D without activation,
// and run it in that convolution's epilogue),
// fuse_residual_int8 (0|1, default kDefaultFuseResidualInt8: the same for
// int8 ADDs after int8 CONV_2Ds, TFLite's int8 ADD applied per tile, bit-exact;
// needs fuse_residual=1 too),
// winograd (0|1, default 1: run 3x3 stride-1 convolutions as Winograd
// F(2x2, 3x3) over the same sparse blocks, see winograd.h).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "sparse_conv.h"
#include "arena_plan.h"
#include "int8_claim.h"
#include "int8_conv.h"
#include "thread_pool.h"
#include "winograd.h"
#include "tsp_tflite/tflite_abi.h"

#define TSP_EXPORT extern "C" __attribute__((visibility("default")))

namespace tsp {
namespace {

constexpr const char* kVersion = "0.1.0";
// The lowest 1x16 block sparsity (in steps of 0.1) at which the delegate beat
// XNNPACK on every ResNet-50 layer shape at 1 thread
// (benchmarks/results/latency_layers_threshold.json, Winograd on: 0.3 ->
// 0.86-1.63x, 0.4 -> 1.02-1.82x, 0.5 -> 1.06-2.21x; the 1x1 layers set it).
constexpr double kDefaultMinSparsity = 0.4;
// The int8 counterpart (int8 CONV_2D and FULLY_CONNECTED nodes), measured on
// CONV_2D layers against XNNPACK's dense int8
// on the ResNet-50 layer shapes at 1 thread (AMD Zen 3, AVX2;
// benchmarks/results/latency_layers_int8.json): 0.4 -> 5 of 12 shapes faster
// (0.95-1.10x), 0.5 -> 11 of 12 (0.99-1.35x), 0.6 -> all (1.21-1.56x). 0.5:
// the one shape behind is at parity, and a whole ResNet-50 at 0.5 gains 1.45x.
constexpr double kDefaultMinSparsityInt8 = 0.5;
// int8 residual ADDs are not fused by default: the exact int8 ADD (three
// double-rounding requantizations per element) costs more in the epilogue
// than XNNPACK's own ADD pass does (ResNet-50 int8, docs/performance.md,
// "int8").
constexpr int kDefaultFuseResidualInt8 = 0;

struct Options {
  int num_threads = 1;
  double min_sparsity = kDefaultMinSparsity;
  double min_sparsity_int8 = kDefaultMinSparsityInt8;
  std::string isa = "auto";
  std::string report_path;
  std::string profile_path;
  int log = 0;  // 1: claims on stderr; 2: also per-node invoke times at free
  // Raise the threshold for N narrower than the kernel's vector (see
  // WidthAwareThresholds): those kernels compute fewer lanes per instruction.
  int width_aware = 1;
  int cost_model = 1;
  int fuse_residual = 1;
  int fuse_residual_int8 = kDefaultFuseResidualInt8;
  int winograd = 1;
};

// One claimed node, analysed and packed at delegate Prepare.
struct OpInfo {
  int node_index = -1;
  int builtin = 0;
  int input = -1, filter = -1, bias = -1, output = -1;
  TfLiteConvParams conv{};
  TfLiteFullyConnectedParams fc{};
  // ADD nodes: `input` is the claimed convolution's output, `other` the
  // residual; [add_lo, add_hi] its fused activation.
  int other = -1;
  float add_lo = -INFINITY, add_hi = INFINITY;
  Int8AddParams add8;  // int8 ADDs (int8 set): TFLite's int8 ADD, `input` as its first operand
  int producer_node = -1;  // node index of the convolution it may fuse into
  // Set at KernelInit: for an ADD, the convolution run in its place (null:
  // the ADD runs on its own); for that convolution, the ADD it runs within.
  struct OpInfo* fused_conv = nullptr;
  struct OpInfo* fused_into = nullptr;
  // Set at KernelInit for a convolution: the one that runs after it in the
  // partition (its weights are prefetched), or null.
  struct OpInfo* next_conv = nullptr;
  int cout = 0, cin = 0, kh = 1, kw = 1;
  double sparsity = 0.0;
  PackedFilter pf;
  // int8 nodes: the int8 packed filter (pf stays empty) and its plan.
  bool int8 = false;
  PackedFilterInt8 pf8;
  ConvPlan plan8;
  int n() const { return int8 ? pf8.n : pf.n; }
  int taps() const { return int8 ? pf8.taps : pf.taps; }
  int64_t kept_blocks() const { return int8 ? pf8.kept_blocks : pf.kept_blocks; }
  // Set at kernel prepare.
  ConvGeometry geom;
  ConvPlan plan;
  int plan_in_w = -1;  // input width the plan was built for
  AlignedPtr<float> zeros;
  // Set at kernel prepare: run as Winograd F(2x2, 3x3) with `wf`.
  bool winograd = false;
  WinogradFilter wf;
  // log >= 2 or a profile_path: time spent in invoke.
  double seconds = 0.0;
  int64_t calls = 0;
  bool warm = false;
};

struct DelegateData {
  Options opts;
  const KernelSet* kernels = nullptr;
  const Int8KernelSet* kernels8 = nullptr;  // null: int8 nodes are declined
  std::unique_ptr<ThreadPool> pool;
  std::mutex mu;
  std::map<std::pair<const void*, int>, std::unique_ptr<OpInfo>> pending;
  std::vector<std::string> report_nodes;
  std::vector<std::string> profile_nodes;  // one JSON object per freed claimed node
  std::vector<std::string> profile_partitions;  // one per freed partition
  TfLiteDelegate delegate{};
  bool timed() const { return opts.log >= 2 || !opts.profile_path.empty(); }
};

// A delegate kernel: one partition of consecutive claimed nodes.
struct Partition {
  DelegateData* data = nullptr;
  std::vector<std::unique_ptr<OpInfo>> ops;
  // Tensors produced inside and not visible outside: they live in `arena`
  // (planned at kernel prepare), not in TFLite's.
  std::vector<int> internal_tensors;
  std::vector<int> internal_index;     // per tensor: index in internal_tensors, or -1
  std::vector<ArenaRequest> requests;  // per internal tensor (bytes set at prepare)
  std::vector<uint8_t*> internal_data;  // per internal tensor, into `arena`
  AlignedPtr<uint8_t> arena;
  int64_t arena_bytes = 0;   // allocated
  int64_t planned_bytes = 0;  // the current plan's (<= arena_bytes)
  int64_t tensor_bytes = 0;   // the internal tensors' sum: the memory without reuse
  int in_place_adds = 0;      // ADDs writing over their residual
  // The data of tensor t: in the arena if internal, else TFLite's.
  int Internal(int t) const {
    return t >= 0 && size_t(t) < internal_index.size() ? internal_index[t] : -1;
  }
  float* Data(TfLiteContext* ctx, int t) const { return static_cast<float*>(Bytes(ctx, t)); }
  int8_t* Data8(TfLiteContext* ctx, int t) const { return static_cast<int8_t*>(Bytes(ctx, t)); }
  void* Bytes(TfLiteContext* ctx, int t) const {
    const int i = Internal(t);
    return i >= 0 ? static_cast<void*>(internal_data[i]) : ctx->tensors[t].data.data;
  }
  std::vector<ConvScratch> scratch;   // one per pool thread
  std::vector<ConvScratchInt8> scratch8;  // one per pool thread, if it runs int8 nodes
  AlignedPtr<float> winograd_scratch;  // the largest WinogradScratchFloats of its ops
  size_t winograd_floats = 0;
  // DelegateData::timed(): wall time of its invocations (the first excluded).
  double seconds = 0.0;
  int64_t calls = 0;
  bool warm = false;
};

std::string JsonEscape(const char* s) {
  std::string out;
  if (s == nullptr) return out;
  for (const char* p = s; *p; ++p) {
    const unsigned char c = static_cast<unsigned char>(*p);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out;
}

const char* OpName(int builtin) {
  switch (builtin) {
    case kTfLiteBuiltinConv2d: return "CONV_2D";
    case kTfLiteBuiltinFullyConnected: return "FULLY_CONNECTED";
    case kTfLiteBuiltinDepthwiseConv2d: return "DEPTHWISE_CONV_2D";
    case kTfLiteBuiltinAdd: return "ADD";
    default: return "OTHER";
  }
}

bool ActivationRange(int act, float* lo, float* hi) {
  *lo = -INFINITY;
  *hi = INFINITY;
  switch (act) {
    case kTfLiteActNone: return true;
    case kTfLiteActRelu: *lo = 0.0f; return true;
    case kTfLiteActRelu6: *lo = 0.0f; *hi = 6.0f; return true;
    case kTfLiteActReluN1To1: *lo = -1.0f; *hi = 1.0f; return true;
    default: return false;
  }
}

const TfLiteTensor* Tensor(TfLiteContext* ctx, int idx) {
  if (idx < 0 || size_t(idx) >= ctx->tensors_size) return nullptr;
  return &ctx->tensors[idx];
}

bool IsConstFloat(const TfLiteTensor* t) {
  return t != nullptr && t->type == kTfLiteFloat32 && t->allocation_type == kTfLiteMmapRo &&
         t->data.raw != nullptr && t->dims != nullptr;
}

int64_t NumElements(const TfLiteIntArray* dims) {
  int64_t n = 1;
  for (int i = 0; i < dims->size; ++i) n *= dims->data[i];
  return n;
}

// Analyses one node. Returns an OpInfo if claimed; otherwise sets `reason`.
std::unique_ptr<OpInfo> Analyse(TfLiteContext* ctx, int node_index, TfLiteNode* node,
                                int builtin, const Options& opts, const KernelSet& kernels,
                                const Int8KernelSet* kernels8, std::string* reason) {
  auto op = std::make_unique<OpInfo>();
  op->node_index = node_index;
  op->builtin = builtin;
  if (node->inputs == nullptr || node->inputs->size < 2 || node->outputs == nullptr ||
      node->outputs->size != 1) {
    *reason = "unexpected number of inputs/outputs";
    return nullptr;
  }
  if (node->builtin_data == nullptr) {
    *reason = "no builtin parameters";
    return nullptr;
  }
  op->input = node->inputs->data[0];
  op->filter = node->inputs->data[1];
  op->bias = node->inputs->size >= 3 ? node->inputs->data[2] : kTfLiteOptionalTensor;
  op->output = node->outputs->data[0];
  const TfLiteTensor* in = Tensor(ctx, op->input);
  const TfLiteTensor* f = Tensor(ctx, op->filter);
  const TfLiteTensor* out = Tensor(ctx, op->output);
  if (in == nullptr || out == nullptr || f == nullptr || f->dims == nullptr) {
    *reason = "unexpected tensors";
    return nullptr;
  }
  op->int8 = in->type == kTfLiteInt8 && out->type == kTfLiteInt8;
  if (!op->int8 && (in->type != kTfLiteFloat32 || out->type != kTfLiteFloat32)) {
    *reason = "input/output not float32 or int8";
    return nullptr;
  }
  int act = 0;
  if (builtin == kTfLiteBuiltinConv2d) {
    op->conv = *static_cast<const TfLiteConvParams*>(node->builtin_data);
    if (f->dims->size != 4) {
      *reason = "filter rank is not 4";
      return nullptr;
    }
    op->cout = f->dims->data[0];
    op->kh = f->dims->data[1];
    op->kw = f->dims->data[2];
    op->cin = f->dims->data[3];
    if (in->dims == nullptr || in->dims->size != 4 || in->dims->data[3] != op->cin) {
      *reason = "input channels differ from filter channels (grouped convolution)";
      return nullptr;
    }
    if (op->conv.padding != kTfLitePaddingSame && op->conv.padding != kTfLitePaddingValid) {
      *reason = "unknown padding";
      return nullptr;
    }
    if (op->conv.stride_width < 1 || op->conv.stride_height < 1 ||
        op->conv.dilation_width_factor < 1 || op->conv.dilation_height_factor < 1) {
      *reason = "invalid stride or dilation";
      return nullptr;
    }
    act = op->conv.activation;
  } else {
    op->fc = *static_cast<const TfLiteFullyConnectedParams*>(node->builtin_data);
    if (f->dims->size != 2) {
      *reason = "filter rank is not 2";
      return nullptr;
    }
    if (op->fc.weights_format != kTfLiteFullyConnectedWeightsFormatDefault) {
      *reason = "shuffled weights format";
      return nullptr;
    }
    op->cout = f->dims->data[0];
    op->cin = f->dims->data[1];
    // The input's shape may only be known at run time (Keras Dense on rank-3
    // inputs goes through a dynamic RESHAPE): it is checked at kernel prepare.
    act = op->fc.activation;
  }
  float lo, hi;
  if (!ActivationRange(act, &lo, &hi)) {
    *reason = "fused activation not supported (only NONE/RELU/RELU6/RELU_N1_TO_1)";
    return nullptr;
  }
  if (op->cout <= 0 || op->cin <= 0) {
    *reason = "empty filter";
    return nullptr;
  }
  const int taps = op->kh * op->kw;
  if (op->int8) {
    if (kernels8 == nullptr) {
      *reason = "no int8 kernels for this isa";
      return nullptr;
    }
    // One threshold for every N: each int8 path fills its registers at N >= 8.
    double thresholds8[4];
    for (double& t : thresholds8) t = opts.min_sparsity_int8;
    const TfLiteTensor* b =
        op->bias != kTfLiteOptionalTensor ? Tensor(ctx, op->bias) : nullptr;
    // ai-edge-litert's reference int8 FULLY_CONNECTED rounds once, (x * m +
    // 2^(30 - shift)) >> (31 - shift) in int64, where its CONV_2D rounds
    // twice (SRDHM, then RoundingDivideByPOT; docs/int8_kernel_research.md,
    // section 8): the packed filter's output stage follows the node's kind.
    const bool single_rounding = builtin == kTfLiteBuiltinFullyConnected;
    Int8Claim claim;
    if (!AnalyseInt8(in, f, b, out, act, op->cout, op->kh, op->kw, op->cin, single_rounding,
                     thresholds8, &claim, reason)) {
      return nullptr;
    }
    op->pf8 = std::move(claim.pf);
    op->sparsity = claim.sparsity;
    return op;
  }
  if (!IsConstFloat(f)) {
    *reason = "filter is not a constant float32 tensor";
    return nullptr;
  }
  const float* bias = nullptr;
  if (op->bias != kTfLiteOptionalTensor) {
    const TfLiteTensor* b = Tensor(ctx, op->bias);
    if (!IsConstFloat(b)) {
      *reason = "bias is not a constant float32 tensor";
      return nullptr;
    }
    bias = b->data.f;
  }
  double thresholds[4];
  if (opts.width_aware) {
    WidthAwareThresholds(opts.min_sparsity, kernels.lane_fraction, thresholds);
  } else {
    for (double& t : thresholds) t = opts.min_sparsity;
  }
  BlockChoice choice = ChooseBlockSize(f->data.f, op->cout, taps, op->cin, thresholds);
  op->sparsity = choice.sparsity;
  if (choice.n == 0) {
    *reason = choice.reason;
    return nullptr;
  }
  op->pf = PackFilter(f->data.f, bias, op->cout, op->kh, op->kw, op->cin, choice.n);
  const double cost = EstimatedCostRatio(op->pf.kept_blocks, op->pf.rows, op->pf.n, taps,
                                         op->cin);
  if (opts.cost_model && cost > kMaxCostRatio) {
    char buf[256];
    std::snprintf(buf, sizeof(buf),
                  "rows too short: %.1f kept entries of %d per row, %d rows; the cost model "
                  "estimates %.2fx XNNPACK's time (declined above %.1f; option cost_model=0 "
                  "claims it)",
                  double(op->pf.kept_blocks) / op->pf.rows * taps, op->cin * taps, op->pf.rows,
                  cost, kMaxCostRatio);
    *reason = buf;
    return nullptr;
  }
  return op;
}

bool SameDims(const TfLiteIntArray* a, const TfLiteIntArray* b) {
  if (a == nullptr || b == nullptr || a->size != b->size) return false;
  for (int i = 0; i < a->size; ++i) {
    if (a->data[i] != b->data[i]) return false;
  }
  return true;
}

// An ADD the delegate can run in the epilogue of a claimed CONV_2D: float32
// (or int8 after an int8 convolution, if int8 is set), no broadcasting, a
// supported fused activation, and one input produced by a claimed
// convolution without activation and read by nothing else. An int8 ADD with
// such an input that is not claimed gets *reason (a float32 one is left
// silently, as ADDs unrelated to claimed convolutions are).
std::unique_ptr<OpInfo> AnalyseAdd(TfLiteContext* ctx, int node_index, TfLiteNode* node,
                                   const std::map<int, const OpInfo*>& conv_by_output,
                                   const std::map<int, int>& uses, bool int8,
                                   std::vector<int>* taken, std::string* reason) {
  if (node->inputs == nullptr || node->inputs->size != 2 || node->outputs == nullptr ||
      node->outputs->size != 1 || node->builtin_data == nullptr) {
    return nullptr;
  }
  const auto* params = static_cast<const TfLiteAddParams*>(node->builtin_data);
  auto op = std::make_unique<OpInfo>();
  const int a = node->inputs->data[0], b = node->inputs->data[1];
  const int out = node->outputs->data[0];
  const TfLiteTensor* ta = Tensor(ctx, a);
  const TfLiteTensor* tb = Tensor(ctx, b);
  const TfLiteTensor* to = Tensor(ctx, out);
  if (ta == nullptr || tb == nullptr || to == nullptr) return nullptr;
  const bool is8 = ta->type == kTfLiteInt8 && tb->type == kTfLiteInt8 && to->type == kTfLiteInt8;
  if (is8) {
    // Only an ADD after a claimed int8 convolution is the delegate's concern.
    bool after_conv = false;
    for (int x : {a, b}) {
      auto c = conv_by_output.find(x);
      after_conv = after_conv || (c != conv_by_output.end() && c->second->int8);
    }
    if (!after_conv) return nullptr;
    if (!int8) {
      *reason = "int8 ADD fusion off (fuse_residual_int8=0)";
      return nullptr;
    }
    if (!SameDims(ta->dims, tb->dims) || !SameDims(ta->dims, to->dims)) {
      *reason = "int8 ADD with broadcasting";
      return nullptr;
    }
    if (!Int8ActivationRange(params->activation, to->params.scale, to->params.zero_point,
                             &op->add8.act_min, &op->add8.act_max)) {
      *reason = "int8 ADD: fused activation not supported";
      return nullptr;
    }
  } else {
    if (!ActivationRange(params->activation, &op->add_lo, &op->add_hi)) return nullptr;
    if (ta->type != kTfLiteFloat32 || tb->type != kTfLiteFloat32 ||
        to->type != kTfLiteFloat32 || !SameDims(ta->dims, tb->dims) ||
        !SameDims(ta->dims, to->dims)) {
      return nullptr;
    }
  }
  for (int i = 0; i < 2; ++i) {
    const int x = i == 0 ? a : b;
    const int other = i == 0 ? b : a;
    auto conv = conv_by_output.find(x);
    auto used = uses.find(x);
    if (x == other || conv == conv_by_output.end() || used == uses.end() || used->second != 1 ||
        conv->second->int8 != is8) {
      continue;
    }
    const int producer = conv->second->node_index;
    if (std::find(taken->begin(), taken->end(), producer) != taken->end()) continue;
    if (is8) {
      // TFLite's int8 ADD with the convolution's output as operand 1 (the
      // two operands' roles are symmetric: add.cc's twice_max is).
      const int32_t lo = op->add8.act_min, hi = op->add8.act_max;
      const TfLiteTensor* tc = x == a ? ta : tb;
      const TfLiteTensor* tr = x == a ? tb : ta;
      if (!MakeInt8AddParams(tc->params.scale, tc->params.zero_point, tr->params.scale,
                             tr->params.zero_point, to->params.scale, to->params.zero_point, lo,
                             hi, &op->add8)) {
        *reason = "int8 ADD: a multiplier not below one (output scale too small) or a scale <= 0";
        return nullptr;
      }
    }
    taken->push_back(producer);
    op->node_index = node_index;
    op->builtin = kTfLiteBuiltinAdd;
    op->int8 = is8;
    op->input = x;
    op->other = other;
    op->output = out;
    op->producer_node = producer;
    return op;
  }
  if (is8) *reason = "int8 ADD: neither input is a claimed convolution's output read only by it";
  return nullptr;
}

std::string ReportEntry(TfLiteContext* ctx, int node_index, int builtin, const OpInfo* op,
                        const std::string& reason, TfLiteNode* node) {
  char buf[512];
  const char* filter_name = "";
  const char* output_name = "";
  if (node->inputs && node->inputs->size >= 2) {
    const TfLiteTensor* f = Tensor(ctx, node->inputs->data[1]);
    if (f && f->name) filter_name = f->name;
  }
  if (node->outputs && node->outputs->size >= 1) {
    const TfLiteTensor* o = Tensor(ctx, node->outputs->data[0]);
    if (o && o->name) output_name = o->name;
  }
  std::string s;
  std::snprintf(buf, sizeof(buf), "{\"node\": %d, \"op\": \"%s\", \"claimed\": %s, ", node_index,
                OpName(builtin), op ? "true" : "false");
  s += buf;
  if (builtin == kTfLiteBuiltinAdd && op != nullptr) {
    std::snprintf(buf, sizeof(buf), "\"conv_node\": %d, \"dtype\": \"%s\", ", op->producer_node,
                  op->int8 ? "int8" : "float32");
    s += buf;
    s += "\"output\": \"" + JsonEscape(output_name) + "\", \"reason\": \"\"}";
    return s;
  }
  s += "\"filter\": \"" + JsonEscape(filter_name) + "\", ";
  s += "\"output\": \"" + JsonEscape(output_name) + "\", ";
  if (op) {
    std::snprintf(buf, sizeof(buf),
                  "\"n\": %d, \"block_sparsity\": %.6f, \"cout\": %d, \"cin\": %d, \"kh\": %d, "
                  "\"kw\": %d, \"dtype\": \"%s\", \"reason\": \"\"}",
                  op->n(), op->sparsity, op->cout, op->cin, op->kh, op->kw,
                  op->int8 ? "int8" : "float32");
    s += buf;
  } else {
    s += "\"n\": 0, \"reason\": \"" + JsonEscape(reason.c_str()) + "\"}";
  }
  return s;
}

// ", "-joined JSON objects.
std::string JoinJson(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += items[i];
  }
  return out;
}

// Writes `text` to `path` (best effort: a report is not worth failing for).
void WriteTextFile(const std::string& path, const std::string& text) {
  std::FILE* fp = std::fopen(path.c_str(), "w");
  if (fp == nullptr) return;
  std::fwrite(text.data(), 1, text.size(), fp);
  std::fclose(fp);
}

void WriteReport(DelegateData* d) {
  if (d->opts.report_path.empty()) return;
  std::string json = "{\"version\": \"";
  json += kVersion;
  json += "\", \"isa\": \"";
  json += d->kernels->name;
  char buf[128];
  std::snprintf(buf, sizeof(buf), "\", \"num_threads\": %d, \"min_sparsity\": %.6f, \"nodes\": [",
                d->opts.num_threads, d->opts.min_sparsity);
  json += buf;
  json += JoinJson(d->report_nodes) + "]}\n";
  WriteTextFile(d->opts.report_path, json);
}

// ---- the delegate kernel (one per partition) ---------------------------------

void* KernelInit(TfLiteContext* ctx, const char* buffer, size_t /*length*/) {
  const auto* params = reinterpret_cast<const TfLiteDelegateParams*>(buffer);
  auto* d = static_cast<DelegateData*>(params->delegate->data_);
  auto part = std::make_unique<Partition>();
  part->data = d;
  std::lock_guard<std::mutex> lock(d->mu);
  for (int i = 0; i < params->nodes_to_replace->size; ++i) {
    const int node_index = params->nodes_to_replace->data[i];
    auto it = d->pending.find({ctx, node_index});
    if (it == d->pending.end()) {
      ctx->ReportError(ctx, "tsp delegate: node %d was not analysed at Prepare", node_index);
      return nullptr;
    }
    part->ops.push_back(std::move(it->second));
    d->pending.erase(it);
  }
  auto visible = [&](int tensor) {
    for (int j = 0; j < params->output_tensors->size; ++j) {
      if (params->output_tensors->data[j] == tensor) return true;
    }
    return false;
  };
  // An ADD fuses into its convolution when both are in this partition and the
  // convolution's output is seen by nothing else; otherwise it runs alone.
  for (auto& add : part->ops) {
    if (add->builtin != kTfLiteBuiltinAdd || visible(add->input)) continue;
    for (auto& conv : part->ops) {
      if (conv->node_index == add->producer_node && conv->output == add->input &&
          conv->fused_into == nullptr) {
        add->fused_conv = conv.get();
        conv->fused_into = add.get();
      }
    }
  }
  // Tensors produced by an op of the partition and not visible outside it
  // (a fused convolution's output is never written), with their lifetimes in
  // run order: a fused convolution runs, and reads its input, at its ADD.
  for (const auto& op : part->ops) {
    if (!visible(op->output) && op->fused_into == nullptr) {
      if (part->internal_index.empty()) part->internal_index.assign(ctx->tensors_size, -1);
      part->internal_index[op->output] = int(part->internal_tensors.size());
      part->internal_tensors.push_back(op->output);
    }
  }
  part->requests.resize(part->internal_tensors.size());
  std::vector<std::vector<int>> reads(part->ops.size());
  for (size_t pos = 0; pos < part->ops.size(); ++pos) {
    const OpInfo* op = part->ops[pos].get();
    if (op->fused_into != nullptr) continue;
    if (op->builtin == kTfLiteBuiltinAdd) {
      reads[pos] = {op->fused_conv ? op->fused_conv->input : op->input, op->other};
    } else {
      reads[pos] = {op->input};
    }
    const int w = part->Internal(op->output);
    if (w >= 0) part->requests[w].first = part->requests[w].last = int(pos);
  }
  for (size_t pos = 0; pos < part->ops.size(); ++pos) {
    for (int t : reads[pos]) {
      const int r = part->Internal(t);
      if (r >= 0) part->requests[r].last = std::max(part->requests[r].last, int(pos));
    }
  }
  // An ADD writes over its residual when the residual is internal and read by
  // nothing later (one stream through memory instead of two; ResNet-50's
  // 56x56 64->256 convolution with its ADD: 0.21 -> 0.13 ms at 0.9).
  for (size_t pos = 0; pos < part->ops.size(); ++pos) {
    const OpInfo* op = part->ops[pos].get();
    if (op->builtin != kTfLiteBuiltinAdd) continue;
    const int o = part->Internal(op->output);
    const int r = part->Internal(op->other);
    if (o < 0 || r < 0) continue;
    const int conv_input = op->fused_conv ? op->fused_conv->input : op->input;
    if (conv_input == op->other || part->requests[r].last != int(pos)) continue;
    // The int8 epilogue adds per tile after the kernel has stored the tile's
    // convolution values: the output must not be the residual.
    if (op->int8 && op->fused_conv != nullptr) continue;
    if (r < o) {
      part->requests[o].alias_of = r;
      ++part->in_place_adds;
    }
  }
  // Each convolution prefetches the weights of the one that runs after it.
  OpInfo* prev = nullptr;
  for (auto& op : part->ops) {
    OpInfo* conv = op->builtin == kTfLiteBuiltinAdd ? op->fused_conv : op.get();
    if (op->fused_into != nullptr || conv == nullptr) continue;  // runs at its ADD
    if (prev != nullptr) prev->next_conv = conv;
    prev = conv;
  }
  const int threads = d->pool ? d->pool->size() : 1;
  part->scratch.resize(threads);
  for (auto& op : part->ops) {
    if (op->builtin == kTfLiteBuiltinAdd) continue;
    if (op->int8) {
      part->scratch8.resize(threads);
      for (auto& s : part->scratch8) s.Reserve(op->kh * op->kw, op->cout);
      continue;
    }
    op->zeros = AlignedAlloc<float>(size_t(op->cin));
    std::memset(op->zeros.get(), 0, sizeof(float) * size_t(op->cin));
    for (auto& s : part->scratch) s.Reserve(ConvScratchSize(op->kh * op->kw));
  }
  return part.release();
}

// Appends the partition's per-node invoke times to the delegate's profile and
// rewrites profile_path with every node profiled so far.
void WriteProfile(Partition* part) {
  DelegateData* d = part->data;
  std::lock_guard<std::mutex> lock(d->mu);
  for (const auto& op : part->ops) {
    if (op->builtin == kTfLiteBuiltinAdd) continue;  // timed with its convolution
    const double kept = 2.0 * double(op->kept_blocks()) * op->n() * op->taps() *
                        double(op->geom.pixels());
    const double t = op->calls ? op->seconds / double(op->calls) : 0.0;
    char buf[512];
    std::snprintf(buf, sizeof(buf),
                  "{\"node\": %d, \"op\": \"%s\", \"kernel\": [%d, %d], \"cin\": %d, "
                  "\"cout\": %d, \"n\": %d, \"sparsity\": %.6f, \"pixels\": %lld, "
                  "\"calls\": %lld, \"ms_per_call\": %.6f, \"kept_gflops\": %.3f, "
                  "\"fused_add\": %d, \"winograd\": %d}",
                  op->node_index, OpName(op->builtin), op->kh, op->kw, op->cin, op->cout,
                  op->n(), op->sparsity, static_cast<long long>(op->geom.pixels()),
                  static_cast<long long>(op->calls), t * 1e3, t > 0 ? kept / t * 1e-9 : 0.0,
                  op->fused_into ? op->fused_into->node_index : -1, op->winograd ? 1 : 0);
    d->profile_nodes.push_back(buf);
  }
  {
    char buf[320];
    std::snprintf(buf, sizeof(buf),
                  "{\"first_node\": %d, \"nodes\": %d, \"calls\": %lld, \"ms_per_call\": %.6f, "
                  "\"arena_bytes\": %lld, \"tensor_bytes\": %lld, \"in_place_adds\": %d}",
                  part->ops.empty() ? -1 : part->ops.front()->node_index, int(part->ops.size()),
                  static_cast<long long>(part->calls),
                  part->calls ? part->seconds / double(part->calls) * 1e3 : 0.0,
                  static_cast<long long>(part->planned_bytes),
                  static_cast<long long>(part->tensor_bytes), part->in_place_adds);
    d->profile_partitions.push_back(buf);
  }
  std::string json = "{\"version\": \"";
  json += kVersion;
  json += "\", \"isa\": \"";
  json += d->kernels->name;
  char buf[64];
  std::snprintf(buf, sizeof(buf), "\", \"num_threads\": %d, \"nodes\": [", d->opts.num_threads);
  json += buf;
  json += JoinJson(d->profile_nodes) + "], \"partitions\": [" +
          JoinJson(d->profile_partitions) + "]}\n";
  WriteTextFile(d->opts.profile_path, json);
}

void KernelFree(TfLiteContext* /*ctx*/, void* buffer) {
  auto* part = static_cast<Partition*>(buffer);
  if (part != nullptr && !part->data->opts.profile_path.empty()) WriteProfile(part);
  if (part != nullptr && part->data->opts.log >= 2) {
    for (const auto& op : part->ops) {
      if (op->builtin == kTfLiteBuiltinAdd) {
        std::fprintf(stderr, "tsp delegate: node %d ADD %s\n", op->node_index,
                     op->fused_conv ? "fused into its convolution" : "run alone");
        continue;
      }
      const double kept = 2.0 * double(op->kept_blocks()) * op->n() * op->taps() *
                          double(op->geom.pixels());
      const double t = op->calls ? op->seconds / double(op->calls) : 0.0;
      std::fprintf(stderr,
                   "tsp delegate: node %d %dx%d %d->%d 1x%d: %.3f ms/call over %lld calls, "
                   "%.1f GFLOP/s on kept MACs\n",
                   op->node_index, op->kh, op->kw, op->cin, op->cout, op->n(), t * 1e3,
                   static_cast<long long>(op->calls), t > 0 ? kept / t * 1e-9 : 0.0);
    }
  }
  delete part;
}

TfLiteStatus ResizeIfNeeded(TfLiteContext* ctx, int tensor_index, const std::vector<int>& shape) {
  TfLiteTensor* t = &ctx->tensors[tensor_index];
  bool same = t->dims != nullptr && t->dims->size == int(shape.size());
  for (size_t i = 0; same && i < shape.size(); ++i) same = t->dims->data[i] == shape[i];
  if (same) return kTfLiteOk;
  if (ctx->ResizeTensorExplicit != nullptr) {
    return ctx->ResizeTensorExplicit(ctx, t, int(shape.size()), shape.data());
  }
  // ResizeTensor takes ownership; the runtime frees it with free().
  auto* arr = static_cast<TfLiteIntArray*>(std::malloc(sizeof(int) * (shape.size() + 1)));
  arr->size = int(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) arr->data[i] = shape[i];
  return ctx->ResizeTensor(ctx, t, arr);
}

TfLiteStatus KernelPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  auto* part = static_cast<Partition*>(node->user_data);
  if (part == nullptr) return kTfLiteError;
  for (auto& op : part->ops) {
    const TfLiteTensor* in = &ctx->tensors[op->input];
    if (in->dims == nullptr) return kTfLiteError;
    if (op->builtin == kTfLiteBuiltinAdd) {
      const TfLiteTensor* other = &ctx->tensors[op->other];
      bool same = other->dims != nullptr && other->dims->size == in->dims->size;
      for (int i = 0; same && i < in->dims->size; ++i) {
        same = other->dims->data[i] == in->dims->data[i];
      }
      if (!same) {
        ctx->ReportError(ctx, "tsp delegate: ADD node %d: its inputs differ in shape",
                         op->node_index);
        return kTfLiteError;
      }
      std::vector<int> shape(in->dims->data, in->dims->data + in->dims->size);
      if (ResizeIfNeeded(ctx, op->output, shape) != kTfLiteOk) return kTfLiteError;
      if (op->fused_conv != nullptr) {  // its convolution has no activation of its own
        op->fused_conv->geom.act_min = op->add_lo;
        op->fused_conv->geom.act_max = op->add_hi;
      }
      continue;
    }
    ConvGeometry& g = op->geom;
    g.cin = op->cin;
    g.cout = op->cout;
    g.kh = op->kh;
    g.kw = op->kw;
    std::vector<int> out_shape;
    int act = 0;
    if (op->builtin == kTfLiteBuiltinConv2d) {
      if (in->dims->size != 4 || in->dims->data[3] != op->cin) {
        ctx->ReportError(ctx, "tsp delegate: CONV_2D input shape does not match its filter");
        return kTfLiteError;
      }
      g.batch = in->dims->data[0];
      g.in_h = in->dims->data[1];
      g.in_w = in->dims->data[2];
      g.stride_h = op->conv.stride_height;
      g.stride_w = op->conv.stride_width;
      g.dil_h = op->conv.dilation_height_factor;
      g.dil_w = op->conv.dilation_width_factor;
      if (op->conv.padding == kTfLitePaddingSame) {
        ComputeSamePadding(g.in_h, g.kh, g.stride_h, g.dil_h, &g.out_h, &g.pad_top);
        ComputeSamePadding(g.in_w, g.kw, g.stride_w, g.dil_w, &g.out_w, &g.pad_left);
      } else {
        ComputeValidPadding(g.in_h, g.kh, g.stride_h, g.dil_h, &g.out_h, &g.pad_top);
        ComputeValidPadding(g.in_w, g.kw, g.stride_w, g.dil_w, &g.out_w, &g.pad_left);
      }
      out_shape = {g.batch, g.out_h, g.out_w, g.cout};
      act = op->conv.activation;
    } else {
      const int64_t total = NumElements(in->dims);
      if (total % op->cin != 0) {
        ctx->ReportError(ctx, "tsp delegate: FULLY_CONNECTED input size not a multiple of %d",
                         op->cin);
        return kTfLiteError;
      }
      const int m = int(total / op->cin);
      g.batch = 1;
      g.in_h = g.out_h = 1;
      g.in_w = g.out_w = m;
      g.stride_h = g.stride_w = g.dil_h = g.dil_w = 1;
      g.pad_top = g.pad_left = 0;
      if (op->fc.keep_num_dims) {
        out_shape.assign(in->dims->data, in->dims->data + in->dims->size);
        out_shape.back() = op->cout;
      } else {
        out_shape = {m, op->cout};
      }
      act = op->fc.activation;
    }
    ActivationRange(act, &g.act_min, &g.act_max);
    if (op->fused_into != nullptr) {
      g.act_min = op->fused_into->add_lo;
      g.act_max = op->fused_into->add_hi;
    }
    if (op->int8) {  // the packed filter holds the int8 activation range
      if (op->pf8.taps > 1 && op->plan_in_w != g.in_w) {
        PrepareConvPlanInt8(g, op->pf8, &op->plan8);
        op->plan_in_w = g.in_w;
      }
      if (ResizeIfNeeded(ctx, op->output, out_shape) != kTfLiteOk) return kTfLiteError;
      continue;
    }
    if (op->pf.taps > 1 && op->plan_in_w != g.in_w) {
      PrepareConvPlan(g, op->pf, &op->plan);
      op->plan_in_w = g.in_w;
    }
    op->winograd = part->data->opts.winograd && op->builtin == kTfLiteBuiltinConv2d &&
                   WinogradApplies(g, op->pf) && WinogradPays(g, op->pf);
    if (op->winograd) {
      if (!op->wf.valid()) op->wf = TransformFilter(op->pf);
      const size_t floats =
          WinogradScratchFloats(g, part->data->pool ? part->data->pool->size() : 1);
      if (floats > part->winograd_floats) {
        part->winograd_scratch = AlignedAlloc<float>(floats);
        part->winograd_floats = floats;
      }
    }
    if (ResizeIfNeeded(ctx, op->output, out_shape) != kTfLiteOk) return kTfLiteError;
  }
  // Tensors internal to the partition live in its own arena, planned for
  // reuse now that their shapes are known.
  part->tensor_bytes = 0;
  for (size_t i = 0; i < part->internal_tensors.size(); ++i) {
    const TfLiteTensor* t = &ctx->tensors[part->internal_tensors[i]];
    if (t->dims == nullptr) return kTfLiteError;
    const int64_t element = t->type == kTfLiteInt8 ? 1 : int64_t(sizeof(float));
    part->requests[i].bytes = NumElements(t->dims) * element;
    part->tensor_bytes += part->requests[i].bytes;
  }
  const ArenaPlan plan = PlanArena(part->requests);
  part->planned_bytes = plan.size;
  if (plan.size > part->arena_bytes) {
    part->arena = AlignedAlloc<uint8_t>(size_t(plan.size));
    part->arena_bytes = plan.size;
  }
  part->internal_data.resize(part->internal_tensors.size());
  for (size_t i = 0; i < part->internal_tensors.size(); ++i) {
    part->internal_data[i] = part->arena.get() + plan.offset[i];
  }
  return kTfLiteOk;
}

TfLiteStatus RunPartition(TfLiteContext* ctx, Partition* part);

TfLiteStatus KernelInvoke(TfLiteContext* ctx, TfLiteNode* node) {
  auto* part = static_cast<Partition*>(node->user_data);
  if (!part->data->timed()) return RunPartition(ctx, part);
  const auto t0 = std::chrono::steady_clock::now();
  const TfLiteStatus status = RunPartition(ctx, part);
  if (part->warm) {  // the first invoke (cold caches) is not counted
    part->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++part->calls;
  }
  part->warm = true;
  return status;
}

TfLiteStatus RunPartition(TfLiteContext* ctx, Partition* part) {
  DelegateData* d = part->data;
  for (auto& op : part->ops) {
    if (op->fused_into != nullptr) continue;  // runs at its ADD's place
    OpInfo* conv = op.get();
    const float* residual = nullptr;
    const int8_t* residual8 = nullptr;
    if (op->builtin == kTfLiteBuiltinAdd && op->int8) {
      const int8_t* a = part->Data8(ctx, op->input);
      const int8_t* b = part->Data8(ctx, op->other);
      int8_t* out = part->Data8(ctx, op->output);
      if (b == nullptr || out == nullptr || (op->fused_conv == nullptr && a == nullptr)) {
        ctx->ReportError(ctx, "tsp delegate: tensor of node %d not allocated", op->node_index);
        return kTfLiteError;
      }
      if (op->fused_conv == nullptr) {
        d->kernels8->add_row(a, b, out, NumElements(ctx->tensors[op->output].dims), op->add8);
        continue;
      }
      conv = op->fused_conv;
      residual8 = b;
    } else if (op->builtin == kTfLiteBuiltinAdd) {
      const float* a = part->Data(ctx, op->input);
      const float* b = part->Data(ctx, op->other);
      float* out = part->Data(ctx, op->output);
      if (b == nullptr || out == nullptr || (op->fused_conv == nullptr && a == nullptr)) {
        ctx->ReportError(ctx, "tsp delegate: tensor of node %d not allocated", op->node_index);
        return kTfLiteError;
      }
      if (op->fused_conv == nullptr) {
        AddClamp(a, b, out, NumElements(ctx->tensors[op->output].dims), op->add_lo,
                 op->add_hi);
        continue;
      }
      conv = op->fused_conv;
      residual = b;
    }
    if (conv->int8) {
      const int8_t* in8 = part->Data8(ctx, conv->input);
      int8_t* out8 = part->Data8(ctx, op->output);
      if (in8 == nullptr || out8 == nullptr) {
        ctx->ReportError(ctx, "tsp delegate: tensor of node %d not allocated", op->node_index);
        return kTfLiteError;
      }
      const bool timed = d->timed();
      const auto t0 = timed ? std::chrono::steady_clock::now()
                            : std::chrono::steady_clock::time_point();
      RunSparseConvInt8(conv->geom, conv->pf8, *d->kernels8, in8, out8, part->scratch8.data(),
                        d->pool.get(), conv->pf8.taps > 1 ? &conv->plan8 : nullptr, residual8,
                        residual8 != nullptr ? &op->add8 : nullptr);
      if (timed) {
        if (conv->warm) {
          conv->seconds +=
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          ++conv->calls;
        }
        conv->warm = true;
      }
      continue;
    }
    const float* in = part->Data(ctx, conv->input);
    float* out = part->Data(ctx, op->output);
    if (in == nullptr || out == nullptr) {
      ctx->ReportError(ctx, "tsp delegate: tensor of node %d not allocated", op->node_index);
      return kTfLiteError;
    }
    const bool timed = d->timed();
    const auto t0 = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    // The next convolution's weights to prefetch: its packed filter, or the
    // first of its Winograd filters (the ones it reads first).
    const OpInfo* nc = conv->next_conv;
    const PackedFilter* next =
        nc == nullptr || nc->int8 ? nullptr : (nc->winograd ? &nc->wf.u[0] : &nc->pf);
    if (conv->winograd) {
      RunWinogradConv(conv->geom, conv->pf, conv->wf, *d->kernels, in, out, residual,
                      conv->zeros.get(), part->winograd_scratch.get(), part->scratch.data(),
                      d->pool.get(), next);
    } else {
      RunSparseConv(conv->geom, conv->pf, *d->kernels, in, out, conv->zeros.get(),
                    part->scratch.data(), d->pool.get(), &conv->plan, residual, next);
    }
    if (timed) {
      if (conv->warm) {  // the first invoke (cold caches) is not counted
        conv->seconds +=
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ++conv->calls;
      }
      conv->warm = true;
    }
  }
  return kTfLiteOk;
}

// ---- delegate Prepare ----------------------------------------------------------

TfLiteStatus DelegatePrepare(TfLiteContext* ctx, TfLiteDelegate* delegate) {
  auto* d = static_cast<DelegateData*>(delegate->data_);
  TfLiteIntArray* plan = nullptr;
  if (ctx->GetExecutionPlan(ctx, &plan) != kTfLiteOk || plan == nullptr) return kTfLiteError;
  std::vector<int> plan_nodes(plan->data, plan->data + plan->size);
  std::vector<int> claimed;
  std::unique_lock<std::mutex> lock(d->mu);
  std::map<int, int> uses;  // readers of each tensor over the whole plan
  std::vector<std::pair<int, TfLiteNode*>> add_nodes;
  for (int node_index : plan_nodes) {
    TfLiteNode* node = nullptr;
    TfLiteRegistration* reg = nullptr;
    if (ctx->GetNodeAndRegistration(ctx, node_index, &node, &reg) != kTfLiteOk) {
      return kTfLiteError;
    }
    for (int i = 0; node->inputs != nullptr && i < node->inputs->size; ++i) {
      if (node->inputs->data[i] >= 0) ++uses[node->inputs->data[i]];
    }
    const int builtin = reg->builtin_code;
    if (builtin == kTfLiteBuiltinAdd) add_nodes.emplace_back(node_index, node);
    if (builtin != kTfLiteBuiltinConv2d && builtin != kTfLiteBuiltinFullyConnected) {
      if (builtin == kTfLiteBuiltinDepthwiseConv2d) {
        d->report_nodes.push_back(
            ReportEntry(ctx, node_index, builtin, nullptr, "op not supported", node));
      }
      continue;
    }
    std::string reason;
    std::unique_ptr<OpInfo> op = Analyse(ctx, node_index, node, builtin, d->opts, *d->kernels,
                                           d->kernels8, &reason);
    d->report_nodes.push_back(ReportEntry(ctx, node_index, builtin, op.get(), reason, node));
    if (d->opts.log) {
      std::fprintf(stderr, "tsp delegate: node %d %s %s%s\n", node_index, OpName(builtin),
                   op ? "claimed" : "declined: ", op ? "" : reason.c_str());
    }
    if (op) {
      claimed.push_back(node_index);
      d->pending[{ctx, node_index}] = std::move(op);
    }
  }
  if (d->opts.fuse_residual && !claimed.empty()) {
    std::map<int, const OpInfo*> conv_by_output;
    for (int node_index : claimed) {
      const OpInfo* op = d->pending[{ctx, node_index}].get();
      if (op->builtin == kTfLiteBuiltinConv2d && op->conv.activation == kTfLiteActNone) {
        conv_by_output[op->output] = op;
      }
    }
    std::vector<int> taken;
    std::set<int> chosen(claimed.begin(), claimed.end());
    for (const auto& [node_index, node] : add_nodes) {
      std::string reason;
      std::unique_ptr<OpInfo> op = AnalyseAdd(ctx, node_index, node, conv_by_output, uses,
                                              d->opts.fuse_residual_int8 != 0, &taken, &reason);
      if (!op) {
        if (!reason.empty()) {
          d->report_nodes.push_back(
              ReportEntry(ctx, node_index, kTfLiteBuiltinAdd, nullptr, reason, node));
          if (d->opts.log) {
            std::fprintf(stderr, "tsp delegate: node %d ADD declined: %s\n", node_index,
                         reason.c_str());
          }
        }
        continue;
      }
      d->report_nodes.push_back(ReportEntry(ctx, node_index, kTfLiteBuiltinAdd, op.get(), "", node));
      if (d->opts.log) {
        std::fprintf(stderr, "tsp delegate: node %d ADD claimed (epilogue of node %d)\n",
                     node_index, op->producer_node);
      }
      chosen.insert(node_index);
      d->pending[{ctx, node_index}] = std::move(op);
    }
    claimed.clear();  // the execution plan's order
    for (int node_index : plan_nodes) {
      if (chosen.count(node_index)) claimed.push_back(node_index);
    }
  }
  WriteReport(d);
  if (claimed.empty()) return kTfLiteOk;
  TfLiteRegistration reg{};
  reg.init = KernelInit;
  reg.free = KernelFree;
  reg.prepare = KernelPrepare;
  reg.invoke = KernelInvoke;
  reg.custom_name = "TspSparse1xN";
  reg.version = 1;
  std::vector<int> arr_storage(claimed.size() + 1);
  auto* arr = reinterpret_cast<TfLiteIntArray*>(arr_storage.data());
  arr->size = int(claimed.size());
  for (size_t i = 0; i < claimed.size(); ++i) arr->data[i] = claimed[i];
  lock.unlock();  // KernelInit (called from here) takes the lock
  return ctx->ReplaceNodeSubsetsWithDelegateKernels(ctx, reg, arr, delegate);
}

bool ParseInt(const char* s, int* out) {
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  if (end == s || *end != '\0') return false;
  *out = int(v);
  return true;
}

bool ParseDouble(const char* s, double* out) {
  char* end = nullptr;
  double v = std::strtod(s, &end);
  if (end == s || *end != '\0') return false;
  *out = v;
  return true;
}

}  // namespace
}  // namespace tsp

TSP_EXPORT TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values,
                                                         size_t num_options,
                                                         void (*report_error)(const char*)) {
  using namespace tsp;
  auto fail = [&](const std::string& msg) -> TfLiteDelegate* {
    std::string full = "tsp delegate: " + msg;
    if (report_error) report_error(full.c_str());
    else std::fprintf(stderr, "%s\n", full.c_str());
    return nullptr;
  };
  Options opts;
  for (size_t i = 0; i < num_options; ++i) {
    const std::string key = keys[i] ? keys[i] : "";
    const char* val = values[i] ? values[i] : "";
    if (key == "num_threads") {
      if (!ParseInt(val, &opts.num_threads) || opts.num_threads < 1 || opts.num_threads > 256) {
        return fail(std::string("option num_threads must be an integer in [1, 256], got '") +
                    val + "'");
      }
    } else if (key == "min_sparsity") {
      if (!ParseDouble(val, &opts.min_sparsity) || !(opts.min_sparsity >= 0.0) ||
          !(opts.min_sparsity <= 1.0)) {
        return fail(std::string("option min_sparsity must be a number in [0, 1], got '") + val +
                    "'");
      }
    } else if (key == "min_sparsity_int8") {
      if (!ParseDouble(val, &opts.min_sparsity_int8) || !(opts.min_sparsity_int8 >= 0.0) ||
          !(opts.min_sparsity_int8 <= 1.0)) {
        return fail(std::string("option min_sparsity_int8 must be a number in [0, 1], got '") +
                    val + "'");
      }
    } else if (key == "cost_model") {
      if (!ParseInt(val, &opts.cost_model) || opts.cost_model < 0 || opts.cost_model > 1) {
        return fail(std::string("option cost_model must be 0 or 1, got '") + val + "'");
      }
    } else if (key == "width_aware") {
      if (!ParseInt(val, &opts.width_aware) || opts.width_aware < 0 || opts.width_aware > 1) {
        return fail(std::string("option width_aware must be 0 or 1, got '") + val + "'");
      }
    } else if (key == "fuse_residual_int8") {
      if (!ParseInt(val, &opts.fuse_residual_int8) || opts.fuse_residual_int8 < 0 ||
          opts.fuse_residual_int8 > 1) {
        return fail(std::string("option fuse_residual_int8 must be 0 or 1, got '") + val + "'");
      }
    } else if (key == "fuse_residual") {
      if (!ParseInt(val, &opts.fuse_residual) || opts.fuse_residual < 0 ||
          opts.fuse_residual > 1) {
        return fail(std::string("option fuse_residual must be 0 or 1, got '") + val + "'");
      }
    } else if (key == "winograd") {
      if (!ParseInt(val, &opts.winograd) || opts.winograd < 0 || opts.winograd > 1) {
        return fail(std::string("option winograd must be 0 or 1, got '") + val + "'");
      }
    } else if (key == "isa") {
      opts.isa = val;
    } else if (key == "report_path") {
      opts.report_path = val;
    } else if (key == "profile_path") {
      opts.profile_path = val;
    } else if (key == "log") {
      if (!ParseInt(val, &opts.log) || opts.log < 0 || opts.log > 2) {
        return fail(std::string("option log must be 0, 1 or 2, got '") + val + "'");
      }
    } else {
      return fail("unknown option '" + key +
                  "' (valid: num_threads, min_sparsity, min_sparsity_int8, width_aware, cost_model, "
                  "fuse_residual, fuse_residual_int8, "
                  "winograd, isa, report_path, profile_path, log)");
    }
  }
  const KernelSet* ks = SelectKernels(opts.isa);
  if (ks == nullptr) {
    return fail("option isa '" + opts.isa +
                "' is unknown or not supported by this CPU/build (valid: auto, scalar, avx2, "
                "avx512 on x86-64; neon on aarch64)");
  }
  auto* d = new DelegateData();
  d->opts = opts;
  d->kernels = ks;
  d->kernels8 = SelectKernelsInt8(opts.isa);
  if (opts.num_threads > 1) d->pool = std::make_unique<ThreadPool>(opts.num_threads);
  TfLiteDelegate& del = d->delegate;
  std::memset(&del, 0, sizeof(del));
  del.data_ = d;
  del.Prepare = DelegatePrepare;
  // Keras models converted with a None batch carry dynamic-shape ops; without
  // this flag ModifyGraphWithDelegate fails before Prepare is called.
  del.flags = kTfLiteDelegateFlagsAllowDynamicTensors;
  del.opaque_delegate_builder = nullptr;
  return &del;
}

TSP_EXPORT void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) {
  if (delegate == nullptr) return;
  delete static_cast<tsp::DelegateData*>(delegate->data_);
}

// Small introspection helpers for Python (ctypes) and tests.
TSP_EXPORT const char* tsp_delegate_version() { return tsp::kVersion; }

TSP_EXPORT double tsp_delegate_default_min_sparsity() { return tsp::kDefaultMinSparsity; }
TSP_EXPORT double tsp_delegate_default_min_sparsity_int8() {
  return tsp::kDefaultMinSparsityInt8;
}

// 1 if the named instruction-set path is built in and runs on this CPU.
TSP_EXPORT int tsp_delegate_isa_available(const char* isa) {
  return tsp::SelectKernels(isa ? isa : "") != nullptr ? 1 : 0;
}

// Lane fraction of the 1xN kernel of a path (1.0 if the path is unavailable).
TSP_EXPORT double tsp_delegate_lane_fraction(const char* isa, int n) {
  const tsp::KernelSet* ks = tsp::SelectKernels(isa ? isa : "");
  if (ks == nullptr) return 1.0;
  for (int i = 0; i < 4; ++i) {
    if (tsp::kBlockSizes[i] == n) return ks->lane_fraction[i];
  }
  return 1.0;
}

// Name of the path "auto" selects on this CPU.
TSP_EXPORT const char* tsp_delegate_auto_isa() { return tsp::SelectKernels("auto")->name; }
