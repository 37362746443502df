// The sweep report: every point's report.json and evaluation results gathered into results.csv,
// results.md (best first by the metric; failed and pending points listed with their error) and
// results.svg (the metric against each swept parameter).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "recall/sweep/plan.h"

namespace recall {

struct SweepEvalResult {
  double loss = 0;          // token-weighted mean NLL over the set's text and completion samples
  bool has_loss = false;
  double accuracy = 0;      // choice accuracy, else completion exact match
  bool has_accuracy = false;
};

struct SweepPointResult {
  int index = 0;
  std::vector<std::string> values;          // swept keys' values
  std::string status;                       // finished | failed | pending
  std::string error;                        // first line of error.txt (failed)
  double merge_seconds = 0;                 // sum of report.json's timings
  std::map<std::string, SweepEvalResult> eval;  // by set name
  double metric = 0;
  bool has_metric = false;
  bool weights_kept = false;                // finished, and keep_weights has not dropped its weights
};

struct SweepResults {
  std::vector<std::string> keys;
  std::vector<std::string> sets;            // eval set names, plan order
  std::string metric;                       // "mean_accuracy", "neg_mean_loss" or "" (no evaluation)
  std::vector<SweepPointResult> points;     // best first; points without a metric after, by index
  KeepWeights keep_weights = KeepWeights::All;
};

// One point's metric from its evaluation results: the mean accuracy over the sets that have one
// (`accuracy`), else minus the mean loss over the sets that have one; false when no set has it.
// The report and keep_weights: best both use it, so they agree on the best point.
bool sweep_metric(const std::map<std::string, SweepEvalResult>& eval, bool accuracy, double* metric);
// Whether point a ranks before point b: the higher metric first (a finite one before any other),
// equal metrics by the lower index, so that the order is the same whatever order points ran in.
bool sweep_ranks_before(double a_metric, int a_index, double b_metric, int b_index);

// Mean eval accuracy over the sets when any finished point has an accuracy, else the negative
// mean loss; points lacking the metric sort last.
SweepResults gather_sweep_results(const SweepPlan& plan);
// Reads a `recall eval --out` JSON (throws naming the file when it is not one).
SweepEvalResult read_eval_result(const std::string& path);

std::string sweep_results_csv(const SweepResults& r);
std::string sweep_results_markdown(const SweepResults& r, const std::string& title);
std::string sweep_results_svg(const SweepResults& r);

// Writes results.csv, results.md and results.svg into the sweep directory.
SweepResults write_sweep_report(const std::string& dir);

}  // namespace recall
