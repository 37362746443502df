// Entry points of recall's subcommands; each lives in jobs/<name>.cpp and is dispatched by
// jobs/main.cpp. argv[0] is the subcommand name.
#pragma once

namespace recall::jobs {

int inspect(int argc, char** argv);
int convert(int argc, char** argv);

}  // namespace recall::jobs
