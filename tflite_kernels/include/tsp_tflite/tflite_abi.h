// Minimal declarations of the TensorFlow Lite C ABI used by the 1xN delegate.
//
// These are our own declarations of the structs the TFLite runtime hands to a
// delegate. They must match, field for field, the layouts of the TFLite runtime
// bundled in ai-edge-litert 2.3.0 (the version the Python package pins). The
// facts come from these upstream headers (Apache-2.0, TensorFlow Authors):
//   tensorflow/lite/core/c/c_api_types.h     TfLiteStatus, TfLiteType,
//                                            TfLiteQuantizationParams
//   tensorflow/lite/core/c/common.h          TfLiteIntArray, TfLiteFloatArray,
//                                            TfLiteAffineQuantization, TfLiteTensor,
//                                            TfLiteNode, TfLiteContext,
//                                            TfLiteRegistration, TfLiteDelegate,
//                                            TfLiteDelegateParams
//   tensorflow/lite/core/c/builtin_op_data.h TfLiteConvParams,
//                                            TfLiteFullyConnectedParams
//   tensorflow/lite/schema/schema.fbs        BuiltinOperator codes
//   tensorflow/lite/delegates/external/README.md  the plugin entry points
// The structs are "semi-ABI stable": upstream only appends fields. Where we
// only read a prefix of a struct that the runtime allocates (TfLiteContext,
// the builtin params), the tail is left out and said so. Structs whose size
// matters to us (TfLiteTensor: the runtime's tensor array is indexed with it;
// TfLiteRegistration: passed by value; TfLiteDelegate: we allocate it) are
// complete and checked with static_asserts on LP64 targets.
#ifndef TSP_TFLITE_TFLITE_ABI_H_
#define TSP_TFLITE_TFLITE_ABI_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- c_api_types.h ----------------------------------------------------------
typedef enum TfLiteStatus {
  kTfLiteOk = 0,
  kTfLiteError = 1,
  kTfLiteDelegateError = 2,
  kTfLiteApplicationError = 3,
  kTfLiteDelegateDataNotFound = 4,
  kTfLiteDelegateDataWriteError = 5,
  kTfLiteDelegateDataReadError = 6,
  kTfLiteUnresolvedOps = 7,
  kTfLiteCancelled = 8,
  kTfLiteOutputShapeNotKnown = 9,
} TfLiteStatus;

// Only the values we compare against; the enum is an int in the ABI.
typedef enum TfLiteType {
  kTfLiteNoType = 0,
  kTfLiteFloat32 = 1,
  kTfLiteInt32 = 2,
  kTfLiteUInt8 = 3,
  kTfLiteInt64 = 4,
  kTfLiteString = 5,
  kTfLiteBool = 6,
  kTfLiteInt16 = 7,
  kTfLiteComplex64 = 8,
  kTfLiteInt8 = 9,
  kTfLiteFloat16 = 10,
} TfLiteType;

typedef struct TfLiteQuantizationParams {
  float scale;
  int32_t zero_point;
} TfLiteQuantizationParams;

// ---- common.h -----------------------------------------------------------------
struct TfLiteContext;
struct TfLiteDelegate;
struct TfLiteRegistration;

#define kTfLiteOptionalTensor (-1)

typedef struct TfLiteIntArray {
  int size;
  int data[];  // flexible array member, as upstream on gcc/clang
} TfLiteIntArray;

typedef union TfLitePtrUnion {
  int32_t* i32;
  float* f;
  char* raw;
  const char* raw_const;
  uint8_t* uint8;
  void* data;
} TfLitePtrUnion;

typedef enum TfLiteAllocationType {
  kTfLiteMemNone = 0,
  kTfLiteMmapRo,
  kTfLiteArenaRw,
  kTfLiteArenaRwPersistent,
  kTfLiteDynamic,
  kTfLitePersistentRo,
  kTfLiteCustom,
  kTfLiteVariantObject,
  kTfLiteNonCpu,
} TfLiteAllocationType;

typedef int TfLiteBufferHandle;

typedef struct TfLiteFloatArray {
  int size;
  float data[];  // flexible array member, as upstream on gcc/clang
} TfLiteFloatArray;

// TfLiteQuantizationType: the value of TfLiteQuantization.type whose params
// are a TfLiteAffineQuantization.
#define kTfLiteAffineQuantization 1

typedef struct TfLiteAffineQuantization {
  TfLiteFloatArray* scale;  // one scale, or one per index of quantized_dimension
  TfLiteIntArray* zero_point;
  int32_t quantized_dimension;
} TfLiteAffineQuantization;

typedef struct TfLiteQuantization {
  int type;  // TfLiteQuantizationType, an int-sized enum upstream
  void* params;
} TfLiteQuantization;

// The non-TF_LITE_STATIC_MEMORY layout (the one the interpreter uses).
typedef struct TfLiteTensor {
  TfLiteType type;
  TfLitePtrUnion data;
  TfLiteIntArray* dims;
  TfLiteQuantizationParams params;
  TfLiteAllocationType allocation_type;
  size_t bytes;
  const void* allocation;
  const char* name;
  struct TfLiteDelegate* delegate;
  TfLiteBufferHandle buffer_handle;
  bool data_is_stale;
  bool is_variable;
  TfLiteQuantization quantization;
  void* sparsity;  // TfLiteSparsity*
  const TfLiteIntArray* dims_signature;
} TfLiteTensor;

typedef struct TfLiteNode {
  TfLiteIntArray* inputs;
  TfLiteIntArray* outputs;
  TfLiteIntArray* intermediates;
  TfLiteIntArray* temporaries;
  void* user_data;
  void* builtin_data;
  const void* custom_initial_data;
  int custom_initial_data_size;
  struct TfLiteDelegate* delegate;
  bool might_have_side_effect;
} TfLiteNode;

typedef struct TfLiteDelegateParams {
  struct TfLiteDelegate* delegate;
  TfLiteIntArray* nodes_to_replace;
  TfLiteIntArray* input_tensors;
  TfLiteIntArray* output_tensors;
} TfLiteDelegateParams;

typedef struct TfLiteRegistration {
  void* (*init)(struct TfLiteContext* context, const char* buffer, size_t length);
  void (*free)(struct TfLiteContext* context, void* buffer);
  TfLiteStatus (*prepare)(struct TfLiteContext* context, TfLiteNode* node);
  TfLiteStatus (*invoke)(struct TfLiteContext* context, TfLiteNode* node);
  const char* (*profiling_string)(const struct TfLiteContext* context,
                                  const TfLiteNode* node);
  int32_t builtin_code;
  const char* custom_name;
  int version;
  void* registration_external;  // TfLiteOperator*
  void* (*async_kernel)(struct TfLiteContext* context, TfLiteNode* node);
  uint64_t inplace_operator;
} TfLiteRegistration;

// TfLiteContext is allocated by the runtime; we declare the prefix we use, up
// to and including GetTensor. Fields after it (GetEvalTensor, GetModelMetadata,
// AcquireSubgraphContext, ...) are left out: we never allocate or copy one.
typedef struct TfLiteContext {
  size_t tensors_size;
  TfLiteStatus (*GetExecutionPlan)(struct TfLiteContext* context,
                                   TfLiteIntArray** execution_plan);
  TfLiteTensor* tensors;
  void* impl_;
  TfLiteStatus (*ResizeTensor)(struct TfLiteContext*, TfLiteTensor* tensor,
                               TfLiteIntArray* new_size);
  void (*ReportError)(struct TfLiteContext*, const char* msg, ...);
  TfLiteStatus (*AddTensors)(struct TfLiteContext*, int tensors_to_add,
                             int* first_new_tensor_index);
  TfLiteStatus (*GetNodeAndRegistration)(struct TfLiteContext*, int node_index,
                                         TfLiteNode** node,
                                         struct TfLiteRegistration** registration);
  TfLiteStatus (*ReplaceNodeSubsetsWithDelegateKernels)(
      struct TfLiteContext*, struct TfLiteRegistration registration,
      const TfLiteIntArray* nodes_to_replace, struct TfLiteDelegate* delegate);
  int recommended_num_threads;
  void* (*GetExternalContext)(struct TfLiteContext*, int);
  void (*SetExternalContext)(struct TfLiteContext*, int, void*);
  bool allow_fp32_relax_to_fp16;
  void* profiler;
  void* (*AllocatePersistentBuffer)(struct TfLiteContext* ctx, size_t bytes);
  TfLiteStatus (*AllocateBufferForEval)(struct TfLiteContext* ctx, size_t bytes,
                                        void** ptr);
  TfLiteStatus (*RequestScratchBufferInArena)(struct TfLiteContext* ctx,
                                              size_t bytes, int* buffer_idx);
  void* (*GetScratchBuffer)(struct TfLiteContext* ctx, int buffer_idx);
  TfLiteStatus (*ResizeTensorExplicit)(struct TfLiteContext* ctx,
                                       TfLiteTensor* tensor, int dims,
                                       const int* shape);
  TfLiteStatus (*PreviewDelegatePartitioning)(
      struct TfLiteContext* context, const TfLiteIntArray* nodes_to_replace,
      TfLiteDelegateParams** partition_params_array, int* num_partitions);
  TfLiteTensor* (*GetTensor)(const struct TfLiteContext* context, int tensor_idx);
  // ... upstream continues; not declared here.
} TfLiteContext;

typedef enum TfLiteDelegateFlags {
  kTfLiteDelegateFlagsNone = 0,
  kTfLiteDelegateFlagsAllowDynamicTensors = 1,
  kTfLiteDelegateFlagsRequirePropagatedShapes = 2,
  kTfLiteDelegateFlagsPerOperatorProfiling = 4,
} TfLiteDelegateFlags;

typedef struct TfLiteDelegate {
  void* data_;
  TfLiteStatus (*Prepare)(TfLiteContext* context, struct TfLiteDelegate* delegate);
  TfLiteStatus (*CopyFromBufferHandle)(TfLiteContext* context,
                                       struct TfLiteDelegate* delegate,
                                       TfLiteBufferHandle buffer_handle,
                                       TfLiteTensor* tensor);
  TfLiteStatus (*CopyToBufferHandle)(TfLiteContext* context,
                                     struct TfLiteDelegate* delegate,
                                     TfLiteBufferHandle buffer_handle,
                                     TfLiteTensor* tensor);
  void (*FreeBufferHandle)(TfLiteContext* context, struct TfLiteDelegate* delegate,
                           TfLiteBufferHandle* handle);
  int64_t flags;
  void* opaque_delegate_builder;  // TfLiteOpaqueDelegateBuilder*; must be NULL
} TfLiteDelegate;

// ---- builtin_op_data.h (prefixes; later versions append fields) ---------------
typedef enum TfLitePadding {
  kTfLitePaddingUnknown = 0,
  kTfLitePaddingSame = 1,
  kTfLitePaddingValid = 2,
} TfLitePadding;

typedef enum TfLiteFusedActivation {
  kTfLiteActNone = 0,
  kTfLiteActRelu = 1,
  kTfLiteActReluN1To1 = 2,
  kTfLiteActRelu6 = 3,
  kTfLiteActTanh = 4,
  kTfLiteActSignBit = 5,
  kTfLiteActSigmoid = 6,
} TfLiteFusedActivation;

typedef struct TfLiteConvParams {
  TfLitePadding padding;
  int stride_width;
  int stride_height;
  TfLiteFusedActivation activation;
  int dilation_width_factor;
  int dilation_height_factor;
} TfLiteConvParams;

typedef enum TfLiteFullyConnectedWeightsFormat {
  kTfLiteFullyConnectedWeightsFormatDefault = 0,
  kTfLiteFullyConnectedWeightsFormatShuffled4x16Int8 = 1,
} TfLiteFullyConnectedWeightsFormat;

typedef struct TfLiteFullyConnectedParams {
  TfLiteFusedActivation activation;
  TfLiteFullyConnectedWeightsFormat weights_format;
  bool keep_num_dims;
  bool asymmetric_quantize_inputs;
} TfLiteFullyConnectedParams;

typedef struct TfLiteAddParams {
  TfLiteFusedActivation activation;
  bool pot_scale_int16;  // int16 only
} TfLiteAddParams;

// ---- schema.fbs BuiltinOperator codes we look at ------------------------------
enum {
  kTfLiteBuiltinAdd = 0,
  kTfLiteBuiltinConv2d = 3,
  kTfLiteBuiltinDepthwiseConv2d = 4,
  kTfLiteBuiltinFullyConnected = 9,
};

// ---- delegates/external: the plugin entry points we export --------------------
typedef void (*TspReportErrorFn)(const char*);

#ifdef __cplusplus
}  // extern "C"

#if defined(__LP64__) || defined(_LP64)
static_assert(sizeof(TfLiteIntArray) == 4, "TfLiteIntArray layout");
static_assert(sizeof(TfLiteQuantizationParams) == 8, "TfLiteQuantizationParams layout");
static_assert(sizeof(TfLiteFloatArray) == 4, "TfLiteFloatArray layout");
static_assert(offsetof(TfLiteAffineQuantization, zero_point) == 8, "zero_point offset");
static_assert(offsetof(TfLiteAffineQuantization, quantized_dimension) == 16, "quantized_dimension");
static_assert(offsetof(TfLiteTensor, data) == 8, "TfLiteTensor.data offset");
static_assert(offsetof(TfLiteTensor, dims) == 16, "TfLiteTensor.dims offset");
static_assert(offsetof(TfLiteTensor, allocation_type) == 32, "TfLiteTensor.allocation_type");
static_assert(offsetof(TfLiteTensor, bytes) == 40, "TfLiteTensor.bytes offset");
static_assert(offsetof(TfLiteTensor, name) == 56, "TfLiteTensor.name offset");
static_assert(offsetof(TfLiteTensor, quantization) == 80, "TfLiteTensor.quantization");
static_assert(sizeof(TfLiteTensor) == 112, "TfLiteTensor size (runtime indexes an array)");
static_assert(offsetof(TfLiteNode, user_data) == 32, "TfLiteNode.user_data offset");
static_assert(offsetof(TfLiteNode, builtin_data) == 40, "TfLiteNode.builtin_data offset");
static_assert(offsetof(TfLiteNode, delegate) == 64, "TfLiteNode.delegate offset");
static_assert(sizeof(TfLiteRegistration) == 88, "TfLiteRegistration is passed by value");
static_assert(offsetof(TfLiteRegistration, builtin_code) == 40, "builtin_code offset");
static_assert(offsetof(TfLiteRegistration, custom_name) == 48, "custom_name offset");
static_assert(offsetof(TfLiteRegistration, version) == 56, "version offset");
static_assert(offsetof(TfLiteContext, tensors) == 16, "TfLiteContext.tensors offset");
static_assert(offsetof(TfLiteContext, GetNodeAndRegistration) == 56, "GetNodeAndRegistration");
static_assert(offsetof(TfLiteContext, ReplaceNodeSubsetsWithDelegateKernels) == 64,
              "ReplaceNodeSubsetsWithDelegateKernels offset");
static_assert(offsetof(TfLiteContext, recommended_num_threads) == 72, "threads offset");
static_assert(offsetof(TfLiteContext, ResizeTensorExplicit) == 144, "ResizeTensorExplicit");
static_assert(offsetof(TfLiteContext, GetTensor) == 160, "GetTensor offset");
static_assert(sizeof(TfLiteDelegate) == 56, "TfLiteDelegate size (we allocate it)");
static_assert(offsetof(TfLiteDelegate, flags) == 40, "TfLiteDelegate.flags offset");
static_assert(sizeof(TfLiteConvParams) == 24, "TfLiteConvParams prefix");
static_assert(offsetof(TfLiteFullyConnectedParams, keep_num_dims) == 8, "keep_num_dims");
#endif  // LP64
#endif  // __cplusplus

#endif  // TSP_TFLITE_TFLITE_ABI_H_
