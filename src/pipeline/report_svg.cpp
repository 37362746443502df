// report.svg: what a merge did, drawn for people. RECALL: a heatmap of the per-block weights
// (blocks along the x axis, a row per model, a viridis colour scale with its values, whose
// luminance rises monotonically so that it reads in grey too) above the similarity curves on the
// same x axis (a colour, dash pattern and marker per model, each curve labelled at its end).
// Baselines: a bar per model with its weight or share, and the method's parameters.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "recall/pipeline/report.h"
#include "recall/util/format.h"

namespace recall {

namespace {

constexpr int kWidth = 960;
constexpr double kCharWidth = 7.0;  // an average sans-serif character at 12 px

std::string num(double v, const char* format = "%.1f") {
  char buf[32];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

struct Rgb {
  double r, g, b;  // 0-255
};

// matplotlib's viridis at 0, 0.1, ..., 1: perceptually uniform, luminance rising from dark
// purple to yellow.
constexpr Rgb kViridis[] = {{68, 1, 84},    {72, 36, 117},  {65, 68, 135},   {53, 95, 141},
                            {42, 120, 142}, {33, 145, 140}, {34, 168, 132},  {68, 191, 112},
                            {122, 209, 81}, {189, 223, 38}, {253, 231, 37}};

Rgb viridis(double v) {
  v = std::clamp(v, 0.0, 1.0) * 10;
  const int i = std::min(9, static_cast<int>(v));
  const double f = v - i;
  const Rgb &a = kViridis[i], &b = kViridis[i + 1];
  return {a.r + f * (b.r - a.r), a.g + f * (b.g - a.g), a.b + f * (b.b - a.b)};
}

std::string hex(const Rgb& c) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", static_cast<int>(std::lround(c.r)),
                static_cast<int>(std::lround(c.g)), static_cast<int>(std::lround(c.b)));
  return buf;
}

// WCAG relative luminance, to pick black or white text on a cell.
double luminance(const Rgb& c) {
  auto lin = [](double x) {
    x /= 255;
    return x <= 0.04045 ? x / 12.92 : std::pow((x + 0.055) / 1.055, 2.4);
  };
  return 0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b);
}

// Okabe-Ito colours (told apart with colour-blindness); with a dash pattern and a marker per
// model the curves are told apart in grey as well.
const char* const kLineColors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                   "#E69F00", "#56B4E9", "#000000", "#882255"};
const char* const kDashes[] = {"none", "8,4", "2,3", "10,3,2,3", "5,2", "14,4", "1,3", "4,2,1,2"};
constexpr int kStyles = 8;

// A marker of style `k` centred at (x, y).
std::string marker(int k, double x, double y, const char* color) {
  const double r = 3.5;
  std::ostringstream s;
  const std::string fill = k % 2 == 0 ? color : "white";
  switch (k % kStyles) {
    case 0: s << "<circle cx='" << num(x) << "' cy='" << num(y) << "' r='" << r << "'"; break;
    case 1:
      s << "<rect x='" << num(x - r) << "' y='" << num(y - r) << "' width='" << 2 * r << "' height='" << 2 * r << "'";
      break;
    case 2:
      s << "<path d='M" << num(x) << "," << num(y - r - 1) << " L" << num(x + r + 0.5) << "," << num(y + r) << " L"
        << num(x - r - 0.5) << "," << num(y + r) << " Z'";
      break;
    case 3:
      s << "<path d='M" << num(x) << "," << num(y - r - 1) << " L" << num(x + r + 1) << "," << num(y) << " L"
        << num(x) << "," << num(y + r + 1) << " L" << num(x - r - 1) << "," << num(y) << " Z'";
      break;
    case 4:
      s << "<path d='M" << num(x) << "," << num(y + r + 1) << " L" << num(x + r + 0.5) << "," << num(y - r) << " L"
        << num(x - r - 0.5) << "," << num(y - r) << " Z'";
      break;
    case 5:
      s << "<path d='M" << num(x - r) << "," << num(y) << " H" << num(x + r) << " M" << num(x) << "," << num(y - r)
        << " V" << num(y + r) << "' stroke-width='2'";
      break;
    case 6:
      s << "<path d='M" << num(x - r) << "," << num(y - r) << " L" << num(x + r) << "," << num(y + r) << " M"
        << num(x - r) << "," << num(y + r) << " L" << num(x + r) << "," << num(y - r) << "' stroke-width='2'";
      break;
    default:  // a hexagon
      s << "<path d='M" << num(x - r) << "," << num(y) << " L" << num(x - r / 2) << "," << num(y - r) << " L"
        << num(x + r / 2) << "," << num(y - r) << " L" << num(x + r) << "," << num(y) << " L" << num(x + r / 2) << ","
        << num(y + r) << " L" << num(x - r / 2) << "," << num(y + r) << " Z'";
  }
  s << " fill='" << fill << "' stroke='" << color << "'/>\n";
  return s.str();
}

// An axis over [lo, hi] with 1, 2, 2.5 or 5 x 10^k steps, at most about `ticks` of them.
struct Axis {
  double lo = 0, hi = 1, step = 0.25;
  int decimals = 2;
  std::vector<double> ticks() const {
    std::vector<double> t;
    for (int i = 0; lo + i * step <= hi + step * 1e-6; ++i) t.push_back(lo + i * step);
    return t;
  }
  double frac(double v) const { return hi > lo ? (v - lo) / (hi - lo) : 0.5; }
};

Axis nice_axis(double lo, double hi, int ticks, double floor_at, double ceil_at) {
  if (!(hi - lo > 1e-9)) lo -= 0.05, hi += 0.05;
  lo = std::max(lo, floor_at), hi = std::min(hi, ceil_at);
  const double raw = (hi - lo) / ticks, mag = std::pow(10.0, std::floor(std::log10(raw)));
  Axis a;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw * (1 - 1e-9)) {
      a.step = m * mag;
      break;
    }
  a.lo = std::floor(lo / a.step + 1e-9) * a.step;
  a.hi = std::ceil(hi / a.step - 1e-9) * a.step;
  a.decimals = std::max(0, static_cast<int>(-std::floor(std::log10(a.step) + 1e-9)) +
                               (std::fmod(a.step / mag, 1.0) > 1e-9 ? 1 : 0));
  return a;
}

std::string fixed(double v, int decimals) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// Block tick step: 1, 2, 5, 10, 20, 50, ... so that at most ~16 blocks are labelled.
int64_t block_step(size_t blocks) {
  for (int64_t m = 1;; m *= 10)
    for (int64_t k : {1, 2, 5})
      if (static_cast<int64_t>(blocks) <= 16 * k * m) return k * m;
}

std::vector<std::string> wrap_words(const std::string& text, size_t max_chars) {
  std::vector<std::string> lines(1);
  std::istringstream in(text);
  for (std::string w; in >> w;) {
    if (!lines.back().empty() && lines.back().size() + 1 + w.size() > max_chars) lines.emplace_back();
    lines.back() += (lines.back().empty() ? "" : " ") + w;
  }
  return lines;
}

void text(std::ostream& s, double x, double y, const std::string& t, const std::string& attrs = "") {
  s << "<text x='" << num(x) << "' y='" << num(y) << "'" << (attrs.empty() ? "" : " " + attrs) << ">" << xml_escape(t)
    << "</text>\n";
}

// Block ticks under a panel whose block l is centred at x(l), `cell` pixels apart: every step-th
// block, and the last one when its label does not touch the previous one.
template <typename X>
void block_ticks(std::ostream& s, const MergeReport& r, X x, double cell, double y) {
  const int64_t step = block_step(r.blocks.size());
  for (size_t l = 0; l < r.blocks.size(); ++l) {
    const int64_t off = r.blocks[l].index % step;
    if (off != 0 && !(l + 1 == r.blocks.size() && static_cast<double>(off) * cell >= 26)) continue;
    s << "<line x1='" << num(x(l)) << "' y1='" << num(y) << "' x2='" << num(x(l)) << "' y2='" << num(y + 5)
      << "' stroke='black'/>\n";
    text(s, x(l), y + 17, std::to_string(r.blocks[l].index), "text-anchor='middle'");
  }
}

// The document's opening: size, font, a white background.
void svg_open(std::ostream& s, int height) {
  s << "<svg xmlns='http://www.w3.org/2000/svg' width='" << kWidth << "' height='" << height << "' viewBox='0 0 "
    << kWidth << " " << height << "' font-family='sans-serif' font-size='12'>\n"
    << "<rect width='100%' height='100%' fill='white'/>\n";
}

// The colour scale at (x, top), h high: stacked bands from the lowest value (bottom) to the
// highest (top), with the axis' ticks and values.
void colour_scale(std::ostream& s, const Axis& scale, double x, double top, double h) {
  text(s, x, top - 10, "weight", "font-weight='bold'");
  constexpr int kBands = 64;
  s << "<g id='colour-scale'>\n";
  for (int i = 0; i < kBands; ++i) {
    const double y = top + h - h * (i + 1) / kBands;
    s << "<rect x='" << num(x) << "' y='" << num(y) << "' width='16' height='" << num(h / kBands + 0.3) << "' fill='"
      << hex(viridis((i + 0.5) / kBands)) << "' shape-rendering='crispEdges'/>\n";
  }
  s << "</g>\n<rect x='" << num(x) << "' y='" << num(top) << "' width='16' height='" << num(h)
    << "' fill='none' stroke='black'/>\n";
  for (double v : scale.ticks()) {
    const double y = top + h - scale.frac(v) * h;
    s << "<line x1='" << num(x + 16) << "' y1='" << num(y) << "' x2='" << num(x + 21) << "' y2='" << num(y)
      << "' stroke='black'/>\n";
    text(s, x + 24, y + 4, fixed(v, scale.decimals));
  }
}

std::string recall_svg(const MergeReport& r) {
  const size_t M = r.models.size(), L = r.blocks.size();
  size_t name_chars = 0;
  for (const auto& n : r.models) name_chars = std::max(name_chars, n.size());
  const double left = std::max(90.0, kCharWidth * (name_chars + 6) + 16);
  const double right = std::max(150.0, kCharWidth * (name_chars + 12) + 30);
  const double plot_w = kWidth - left - right, cell_w = plot_w / static_cast<double>(L);
  const double row_h = M > 12 ? 16 : 24, top1 = 84, heat_h = row_h * static_cast<double>(M);
  const double bar_h = std::max(heat_h, 110.0);
  const double top2 = top1 + bar_h + 84, h2 = 240;
  std::vector<std::string> note;  // the weights of the tensors outside the blocks
  if (r.non_block_weights.size() == M) {
    std::string t = "embedding, final norm and lm_head (outside the blocks):";
    for (size_t m = 0; m < M; ++m) t += " " + r.models[m] + " " + num(r.non_block_weights[m], "%.3f") + (m + 1 < M ? "," : "");
    note = wrap_words(t, 130);
  }
  const int height = static_cast<int>(top2 + h2 + 70 + 18.0 * static_cast<double>(note.size()));
  auto cx = [&](size_t l) { return left + (static_cast<double>(l) + 0.5) * cell_w; };

  std::ostringstream s;
  svg_open(s, height);
  text(s, 16, 26, "RECALL merge of " + std::to_string(M) + " models (reference: " + r.reference + ")",
       "font-size='16' font-weight='bold'");
  text(s, 16, 46,
       "Each block's weights are a softmax over the models' similarity to the reference on typical samples; a "
       "column sums to 1.");

  // Heatmap: a row per model, a column per block.
  double lo = 1, hi = 0;
  for (const auto& b : r.blocks)
    for (double w : b.weights) lo = std::min(lo, w), hi = std::max(hi, w);
  const Axis scale = nice_axis(lo, hi, 5, 0.0, 1.0);
  text(s, left, top1 - 10, "merge weight per block", "font-weight='bold'");
  for (size_t m = 0; m < M; ++m) {
    const double y = top1 + row_h * static_cast<double>(m);
    text(s, left - 8, y + row_h / 2 + 4, r.models[m] + (r.models[m] == r.reference ? " (ref)" : ""),
         "text-anchor='end'");
    for (size_t l = 0; l < L; ++l) {
      const double w = r.blocks[l].weights[m];
      const Rgb c = viridis(scale.frac(w));
      s << "<rect x='" << num(left + cell_w * static_cast<double>(l)) << "' y='" << num(y) << "' width='"
        << num(cell_w + 0.3) << "' height='" << num(row_h + 0.3) << "' fill='" << hex(c)
        << "' shape-rendering='crispEdges'><title>block " << r.blocks[l].index << ", " << xml_escape(r.models[m])
        << ": weight " << num(w, "%.4f") << ", similarity " << num(r.blocks[l].similarity[m], "%.4f")
        << "</title></rect>\n";
      if (cell_w >= 38 && row_h >= 16)
        text(s, cx(l), y + row_h / 2 + 4, num(w, "%.3f"),
             std::string("text-anchor='middle' font-size='10' fill='") + (luminance(c) < 0.25 ? "white" : "black") +
                 "'");
    }
  }
  s << "<rect x='" << num(left) << "' y='" << num(top1) << "' width='" << num(plot_w) << "' height='" << num(heat_h)
    << "' fill='none' stroke='black'/>\n";
  block_ticks(s, r, cx, cell_w, top1 + heat_h);
  text(s, left + plot_w / 2, top1 + heat_h + 34, "block", "text-anchor='middle'");

  colour_scale(s, scale, left + plot_w + 28, top1, bar_h);

  // Similarity curves on the same x axis.
  double slo = 1, shi = 0;
  for (const auto& b : r.blocks)
    for (double v : b.similarity) slo = std::min(slo, v), shi = std::max(shi, v);
  const Axis ya = nice_axis(slo, shi, 5, 0.0, 1.0);
  auto py = [&](double v) { return top2 + h2 - ya.frac(std::clamp(v, ya.lo, ya.hi)) * h2; };
  text(s, left, top2 - 10, "similarity of each model's hidden states to the reference's, per block",
       "font-weight='bold'");
  for (double v : ya.ticks()) {
    s << "<line x1='" << num(left) << "' y1='" << num(py(v)) << "' x2='" << num(left + plot_w) << "' y2='"
      << num(py(v)) << "' stroke='#dddddd'/>\n";
    text(s, left - 6, py(v) + 4, fixed(v, ya.decimals), "text-anchor='end'");
  }
  s << "<rect x='" << num(left) << "' y='" << num(top2) << "' width='" << num(plot_w) << "' height='" << num(h2)
    << "' fill='none' stroke='black'/>\n";
  block_ticks(s, r, cx, cell_w, top2 + h2);
  text(s, left + plot_w / 2, top2 + h2 + 34, "block", "text-anchor='middle'");
  s << "<text transform='translate(" << num(left - 52) << "," << num(top2 + h2 / 2)
    << ") rotate(-90)' text-anchor='middle'>similarity</text>\n";
  // Curve labels at the right end, pushed apart where curves end close together.
  std::vector<std::pair<double, size_t>> ends;
  for (size_t m = 0; m < M; ++m) {
    const int k = static_cast<int>(m % kStyles);
    s << "<g class='curve'><title>" << xml_escape(r.models[m]) << "</title><polyline fill='none' stroke-width='2' stroke='"
      << kLineColors[k] << "' stroke-dasharray='" << kDashes[k] << "' points='";
    for (size_t l = 0; l < L; ++l) s << num(cx(l)) << "," << num(py(r.blocks[l].similarity[m])) << " ";
    s << "'/>\n";
    if (L <= 48)
      for (size_t l = 0; l < L; ++l) s << marker(k, cx(l), py(r.blocks[l].similarity[m]), kLineColors[k]);
    s << "</g>\n";
    ends.push_back({py(r.blocks[L - 1].similarity[m]), m});
  }
  std::sort(ends.begin(), ends.end());
  for (size_t i = 1; i < ends.size(); ++i) ends[i].first = std::max(ends[i].first, ends[i - 1].first + 14);
  for (const auto& [y, m] : ends) {
    const int k = static_cast<int>(m % kStyles);
    const double x = left + plot_w + 10;
    s << marker(k, x + 4, y, kLineColors[k]);
    text(s, x + 13, y + 4, r.models[m] + (r.models[m] == r.reference ? " (reference)" : ""),
         std::string("fill='") + kLineColors[k] + "'");
  }
  for (size_t i = 0; i < note.size(); ++i) text(s, 16, top2 + h2 + 66 + 18.0 * static_cast<double>(i), note[i]);
  s << "</svg>\n";
  return s.str();
}

std::string baseline_svg(const MergeReport& r) {
  const size_t M = r.models.size();
  const BaselineWeights w = baseline_weights(r);
  std::string sentence = method_summary(r) + ".";
  sentence[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(sentence[0])));
  const std::vector<std::string> summary = wrap_words(sentence, 125);
  size_t name_chars = 0;
  for (const auto& n : r.models) name_chars = std::max(name_chars, n.size());
  const double left = std::max(90.0, kCharWidth * name_chars + 30), bar_w = kWidth - left - 260;
  const double top = 64 + 18.0 * static_cast<double>(summary.size()) + 30, row_h = 30;
  // The parameters besides the weights: shared ones on one line, per-model ones one line each.
  std::vector<std::string> lines;
  std::string shared;
  bool varies = false;
  for (const ParamSummary& p : summarize_params(r)) {
    varies = varies || !p.constant();
    if (!p.per_model) {
      shared += (shared.empty() ? "" : ";  ") + p.name + ": " + format_param(r, p, 0);
    } else if (p.name != "weight") {
      std::string line = p.name + ":";
      for (size_t m = 0; m < M; ++m)
        if (!(r.base && *r.base == m && !w.lo.empty() && std::isnan(w.lo[m])))
          line += " " + r.models[m] + " " + format_param(r, p, m) + (m + 1 < M ? "," : "");
      lines.push_back(line);
    }
  }
  if (!shared.empty()) lines.insert(lines.begin(), shared);
  if (varies) lines.push_back("a-b: the value differs between tensors (gradients or filters; report.json's tensor_params)");
  const double rows = w.lo.empty() ? 1 : static_cast<double>(M);
  const int height = static_cast<int>(top + row_h * rows + 64 + 20.0 * static_cast<double>(lines.size()));
  std::ostringstream s;
  svg_open(s, height);
  text(s, 16, 26, r.method + " merge of " + std::to_string(M) + " models", "font-size='16' font-weight='bold'");
  for (size_t i = 0; i < summary.size(); ++i) text(s, 16, 50 + 18.0 * static_cast<double>(i), summary[i]);
  if (w.lo.empty()) {
    text(s, 16, top, "The job recorded no weights for this method; config.resolved.yaml has its parameters.");
  } else {
    text(s, left, top - 12, w.meaning + " per model", "font-weight='bold'");
    double most = 0;
    bool negative = false;
    for (size_t m = 0; m < M; ++m)
      if (!std::isnan(w.lo[m])) most = std::max({most, std::fabs(w.lo[m]), std::fabs(w.hi[m])}), negative = negative || w.lo[m] < 0;
    if (most == 0) most = 1;
    const double zero = left + (negative ? bar_w / 2 : 0), scale = (negative ? bar_w / 2 : bar_w) / most;
    for (size_t m = 0; m < M; ++m) {
      const double y = top + row_h * static_cast<double>(m);
      text(s, left - 8, y + row_h / 2 + 4, r.models[m], "text-anchor='end'");
      if (std::isnan(w.lo[m])) {
        text(s, zero + 6, y + row_h / 2 + 4, "base: the task vectors are differences to it", "font-style='italic'");
        continue;
      }
      // A bar to the highest value, its part above the lowest lighter when tensors differ.
      std::vector<std::pair<double, const char*>> bars = {{w.lo[m], "#31688e"}};
      if (w.lo[m] != w.hi[m]) bars.insert(bars.begin(), {w.hi[m], "#9fb8cc"});
      for (const auto& [v, fill] : bars) {
        const double len = std::fabs(v) * scale, x0 = v < 0 ? zero - len : zero;
        s << "<rect x='" << num(x0) << "' y='" << num(y + 5) << "' width='" << num(len) << "' height='"
          << num(row_h - 10) << "' fill='" << fill << "'><title>" << xml_escape(r.models[m]) << ": "
          << format_range(w.lo[m], w.hi[m]) << "</title></rect>\n";
      }
      const double end = std::max({zero + std::fabs(w.hi[m]) * scale * (w.hi[m] > 0), zero});
      text(s, end + 6, y + row_h / 2 + 4, format_range(w.lo[m], w.hi[m]));
    }
    s << "<line x1='" << num(zero) << "' y1='" << num(top) << "' x2='" << num(zero) << "' y2='"
      << num(top + row_h * static_cast<double>(M)) << "' stroke='black'/>\n";
  }
  for (size_t i = 0; i < lines.size(); ++i) text(s, 16, top + row_h * rows + 36 + 20.0 * static_cast<double>(i), lines[i]);
  text(s, 16, top + row_h * rows + 36 + 20.0 * static_cast<double>(lines.size()),
       "RECALL would weight each block by the models' representations; a baseline's weights come from its config.",
       "fill='#555555'");
  s << "</svg>\n";
  return s.str();
}

}  // namespace

std::string report_svg(const MergeReport& r) {
  return r.method == "recall" && !r.blocks.empty() ? recall_svg(r) : baseline_svg(r);
}

}  // namespace recall
