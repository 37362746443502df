// recall config --config FILE.yaml [--set key=value ...]: decodes a merge config (every key, type
// and range checked, as the merge would) and prints it resolved, defaults included. No models are
// opened: `recall preflight` checks those.
#include <iostream>

#include "jobs.h"
#include "recall/cli/args.h"
#include "recall/config/merge_config.h"

namespace recall::jobs {

int config(int argc, char** argv) {
  ArgParser args("config",
                 "Checks a merge config (keys, types, ranges, method parameters) and prints it resolved,\n"
                 "with every default. Opens no model; `recall preflight` checks the models too.\n"
                 "`recall help config` lists every key.");
  args.option("config", "FILE", "merge config (YAML)", "", true)
      .repeated("set", "KEY=VALUE", "override a config key, e.g. --set typical.clusters=16");
  if (!args.parse(argc, argv)) return 0;
  const MergeConfig c = load_merge_config(args.get("config"), args.get_all("set"));
  for (const std::string& n : c.notes) std::cerr << "note: " << n << "\n";
  std::cout << to_yaml(c);
  return 0;
}

}  // namespace recall::jobs
