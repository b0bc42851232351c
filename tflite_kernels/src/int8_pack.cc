// int8 1xN packing: kept channels padded to pairs, [tap][pair][n][2] weights,
// the input zero point folded into the bias, the per-channel output stage.
#include <algorithm>
#include <cstring>

#include "int8_conv.h"
#include "qrequant.h"

namespace tsp {

void PerChannelMultipliers(float input_scale, const float* filter_scales, int num_filter_scales,
                           float output_scale, int cout, Int8ConvParams* p) {
  p->multiplier.assign(size_t(cout), 0);
  p->shift.assign(size_t(cout), 0);
  for (int c = 0; c < cout; ++c) {
    const double s_w = double(filter_scales[num_filter_scales == 1 ? 0 : c]);
    const double scale = double(input_scale) * s_w / double(output_scale);
    int shift = 0;
    QuantizeMultiplier(scale, &p->multiplier[size_t(c)], &shift);
    p->shift[size_t(c)] = shift;
  }
}

Int8Requant PackedFilterInt8::requant() const {
  Int8Requant r;
  r.bias = bias.get();
  r.mult = mult.get();
  r.lshift = lshift.get();
  r.rshift = rshift.get();
  r.rmask = rmask.get();
  r.total = total.get();
  r.single_rounding = single_rounding;
  r.zp_out = zp_out;
  r.act_min = act_min;
  r.act_max = act_max;
  return r;
}

bool PackFilterInt8(const int8_t* filter, const int32_t* bias, int cout, int kh, int kw, int cin,
                    int n, const Int8ConvParams& q, PackedFilterInt8* out, std::string* error) {
  auto fail = [&](const std::string& why) {
    if (error != nullptr) *error = why;
    return false;
  };
  if (n != 4 && n != 8 && n != 16 && n != 32) return fail("N must be 4, 8, 16 or 32");
  if (cout <= 0 || cout % n != 0) return fail("output channels not a multiple of N");
  if (kh <= 0 || kw <= 0 || cin <= 0) return fail("empty filter");
  if (q.multiplier.size() != size_t(cout) || q.shift.size() != size_t(cout)) {
    return fail("multiplier / shift must have one entry per output channel");
  }
  for (int s : q.shift) {
    if (s < -31 || s > 30) return fail("shift outside [-31, 30]");
  }
  if (q.act_min < -128 || q.act_max > 127 || q.act_min > q.act_max) {
    return fail("activation range not within [-128, 127]");
  }
  if (q.input_zero_point < -128 || q.input_zero_point > 127 || q.output_zero_point < -128 ||
      q.output_zero_point > 127) {
    return fail("zero point outside [-128, 127]");
  }
  PackedFilterInt8 pf;
  pf.n = n;
  pf.rows = cout / n;
  pf.kh = kh;
  pf.kw = kw;
  pf.taps = kh * kw;
  pf.cin = cin;
  const int taps = pf.taps;
  auto weight = [&](int o, int t, int c) { return filter[(size_t(o) * taps + t) * cin + c]; };
  // Kept channels per row (a block is kept if any of its n * taps weights is
  // nonzero), each row padded to an even count with its last channel.
  pf.row_ptr.assign(size_t(pf.rows) + 1, 0);
  std::vector<int32_t> entries;
  entries.reserve(size_t(pf.rows) * (cin + 1));
  for (int r = 0; r < pf.rows; ++r) {
    const size_t first = entries.size();
    for (int c = 0; c < cin; ++c) {
      bool nonzero = false;
      for (int o = r * n; o < r * n + n && !nonzero; ++o) {
        for (int t = 0; t < taps && !nonzero; ++t) nonzero = weight(o, t, c) != 0;
      }
      if (nonzero) entries.push_back(c);
    }
    pf.kept_blocks += int64_t(entries.size() - first);
    if ((entries.size() - first) % 2 != 0) entries.push_back(entries.back());
    pf.row_ptr[size_t(r) + 1] = int32_t(entries.size());
  }
  pf.idx = AlignedAlloc<int32_t>(entries.size());
  if (!entries.empty()) std::memcpy(pf.idx.get(), entries.data(), entries.size() * 4);
  const size_t wbytes = entries.size() * size_t(taps) * n;
  pf.w = AlignedAlloc<int8_t>(wbytes);
  if (wbytes > 0) std::memset(pf.w.get(), 0, wbytes);
  for (int r = 0; r < pf.rows; ++r) {
    const int e0 = pf.row_ptr[r];
    const int ne = pf.row_ptr[r + 1] - e0;
    int8_t* wr = pf.w.get() + size_t(e0) * taps * n;
    for (int t = 0; t < taps; ++t) {
      for (int j = 0; j < ne; ++j) {
        // The pad (odd count: the last entry repeats the one before) keeps 0.
        if (j == ne - 1 && ne >= 2 && entries[size_t(e0 + j)] == entries[size_t(e0 + j - 1)]) {
          continue;
        }
        const int c = entries[size_t(e0 + j)];
        int8_t* pair = wr + (size_t(t) * ne + size_t(j & ~1)) * n;
        for (int o = 0; o < n; ++o) pair[2 * o + (j & 1)] = weight(r * n + o, t, c);
      }
    }
  }
  // Output stage; the fold bias - zp_in * sum(w) in int64, stored wrapped to
  // int32 (the accumulators wrap likewise).
  pf.bias = AlignedAlloc<int32_t>(size_t(cout));
  pf.mult = AlignedAlloc<int32_t>(size_t(cout));
  pf.lshift = AlignedAlloc<int32_t>(size_t(cout));
  pf.rshift = AlignedAlloc<int32_t>(size_t(cout));
  pf.rmask = AlignedAlloc<int32_t>(size_t(cout));
  pf.total = AlignedAlloc<int32_t>(size_t(cout));
  for (int o = 0; o < cout; ++o) {
    int64_t sum = 0;
    for (int t = 0; t < taps; ++t) {
      for (int c = 0; c < cin; ++c) sum += weight(o, t, c);
    }
    const int64_t folded = int64_t(bias ? bias[o] : 0) - int64_t(q.input_zero_point) * sum;
    pf.bias[o] = int32_t(uint32_t(uint64_t(folded)));
    const int s = q.shift[size_t(o)];
    pf.mult[o] = q.multiplier[size_t(o)];
    pf.lshift[o] = s > 0 ? s : 0;
    pf.rshift[o] = s > 0 ? 0 : -s;
    pf.rmask[o] = int32_t((int64_t(1) << pf.rshift[o]) - 1);
    pf.total[o] = 31 - s;
  }
  pf.zp_in = q.input_zero_point;
  pf.zp_out = q.output_zero_point;
  pf.act_min = q.act_min;
  pf.act_max = q.act_max;
  pf.single_rounding = q.single_rounding;
  pf.pad_row = AlignedAlloc<int8_t>(size_t(cin));
  std::memset(pf.pad_row.get(), int(int8_t(q.input_zero_point)), size_t(cin));
  *out = std::move(pf);
  return true;
}

std::vector<int8_t> UnpackFilterInt8(const PackedFilterInt8& pf) {
  const int taps = pf.taps, n = pf.n, cin = pf.cin;
  std::vector<int8_t> f(size_t(pf.cout()) * taps * cin, 0);
  for (int r = 0; r < pf.rows; ++r) {
    const int e0 = pf.row_ptr[r];
    const int ne = pf.row_ptr[r + 1] - e0;
    const int8_t* wr = pf.w.get() + size_t(e0) * taps * n;
    for (int t = 0; t < taps; ++t) {
      for (int j = 0; j < ne; ++j) {
        const int c = pf.idx[e0 + j];
        const int8_t* pair = wr + (size_t(t) * ne + size_t(j & ~1)) * n;
        for (int o = 0; o < n; ++o) {
          // A pad entry's weights are 0: adding them leaves its channel's.
          int8_t& d = f[(size_t(r * n + o) * taps + t) * cin + c];
          d = int8_t(d + pair[2 * o + (j & 1)]);
        }
      }
    }
  }
  return f;
}

void PrepareConvPlanInt8(const ConvGeometry& g, const PackedFilterInt8& pf, ConvPlan* plan) {
  plan->valid = false;
  const int taps = pf.taps;
  const int64_t max_off =
      (int64_t((pf.kh - 1) * g.dil_h) * g.in_w + int64_t(pf.kw - 1) * g.dil_w + 1) * g.cin;
  if (max_off >= int64_t(1) << 31) return;
  const int64_t entries = pf.row_ptr.back();
  plan->tap_channel_offset = AlignedAlloc<int32_t>(size_t(entries) * taps);
  int32_t* off = plan->tap_channel_offset.get();
  for (int r = 0; r < pf.rows; ++r) {
    const int e0 = pf.row_ptr[r];
    const int ne = pf.row_ptr[r + 1] - e0;
    for (int t = 0; t < taps; ++t) {
      const int ky = t / pf.kw, kx = t % pf.kw;
      const int64_t tap_off = (int64_t(ky) * g.dil_h * g.in_w + int64_t(kx) * g.dil_w) * g.cin;
      for (int j = 0; j < ne; ++j) {
        off[size_t(e0) * taps + size_t(t) * ne + j] = int32_t(tap_off + pf.idx[e0 + j]);
      }
    }
  }
  plan->valid = true;
}

}  // namespace tsp
