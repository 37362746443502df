// recall verify DIR|FILE: checks a committed merge output against its manifest.json (merged.h5's
// tensors and RECALL record, every hf/ shard header and byte, the index, config.json), or one
// merged.h5 against its own attributes. Exit 0 only if everything matches.
#include <iostream>

#include "jobs.h"
#include "recall/cli/args.h"
#include "recall/pipeline/verify.h"

namespace recall::jobs {

int verify(int argc, char** argv) {
  ArgParser args("verify", "Checks a merge output directory against its manifest (checksums, shard headers, config) or a merged.h5.");
  args.positional("PATH", "output directory (with manifest.json) or merged.h5").flag("verbose", "list every tensor");
  if (!args.parse(argc, argv)) return 0;
  const auto problems = verify_output(args.get("PATH"), args.flag_set("verbose"));
  if (problems.empty()) {
    std::cout << "verified: " << args.get("PATH") << "\n";
    return 0;
  }
  for (const auto& p : problems) std::cerr << "recall verify: " << p << "\n";
  std::cerr << "recall verify: " << problems.size() << " problem(s); " << args.get("PATH") << " is NOT verified\n";
  return 1;
}

}  // namespace recall::jobs
