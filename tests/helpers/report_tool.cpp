// report_tool: report.svg outside a merge job, for the Python tests.
//   report_tool svg-h5 merged.h5 OUT.svg       the merge recorded in merged.h5 (as recall export reads it)
//   report_tool svg-json report.json OUT.svg   a report.json (method, models, reference, base, blocks,
//                                              tensor_params), so tests can draw made-up reports
//                                              (80 blocks, 8 models, odd names, weights that vary)
// Errors: exit 1 with the message.
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "recall/pipeline/merge_record.h"
#include "recall/pipeline/report.h"
#include "recall/util/error.h"
#include "recall/util/fs.h"

namespace {

recall::MergeReport from_json(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text);
  recall::MergeReport r;
  r.method = j.at("method");
  r.models = j.at("models").get<std::vector<std::string>>();
  r.reference = j.value("reference", "");
  for (const auto& b : j.value("blocks", nlohmann::json::array()))
    r.blocks.push_back({b.at("index"), b.value("sigma2", 0.0), b.at("similarity"), b.at("weights")});
  r.non_block_weights = j.value("non_block_weights", std::vector<double>{});
  if (j.contains("base") && j["base"].is_string())
    for (size_t m = 0; m < r.models.size(); ++m)
      if (r.models[m] == j["base"].get<std::string>()) r.base = m;
  if (j.contains("tensor_params"))
    r.tensor_params = j["tensor_params"].get<std::map<std::string, std::map<std::string, std::vector<double>>>>();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc != 4) recall::fail("usage: report_tool svg-h5 merged.h5 OUT.svg | svg-json report.json OUT.svg");
    const std::string cmd = argv[1];
    recall::MergeReport r;
    if (cmd == "svg-h5") r = recall::read_merge_record(argv[2]).report;
    else if (cmd == "svg-json") r = from_json(recall::read_text_file(argv[2]));
    else recall::fail("unknown command '", cmd, "'");
    recall::write_file_atomic(argv[3], recall::report_svg(r));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "report_tool: %s\n", e.what());
    return 1;
  }
}
