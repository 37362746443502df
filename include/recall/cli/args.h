// Command-line parsing for recall's subcommands: named options (--key VALUE or --key=VALUE),
// flags, positionals, and generated --help text. Unknown options are errors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace recall {

class ArgParser {
 public:
  ArgParser(std::string command, std::string summary);

  // An option taking a value; required options have no default and must be given.
  ArgParser& option(const std::string& name, const std::string& value_name, const std::string& help,
                    const std::string& default_value = "", bool required = false);
  // An option that may be given several times (get_all returns every value in order).
  ArgParser& repeated(const std::string& name, const std::string& value_name, const std::string& help);
  ArgParser& flag(const std::string& name, const std::string& help);
  ArgParser& positional(const std::string& name, const std::string& help, bool required = true);
  // --model, --dtype and --device: the options of every command that runs a model (read them
  // with read_model_options).
  ArgParser& model_options();

  // Parses argv (argv[0] is the subcommand). Returns false when --help was given (help printed).
  bool parse(int argc, char** argv);

  bool has(const std::string& name) const;         // given on the command line
  std::string get(const std::string& name) const;  // value (the last one given) or default
  std::vector<std::string> get_all(const std::string& name) const;
  // The value as a number / an integer >= min; an error naming the option otherwise.
  double get_number(const std::string& name) const;
  int64_t get_integer(const std::string& name, int64_t min) const;
  // The value as a byte count ("5GB", "512MiB", "1e5"; recall/util/byte_size.h).
  uint64_t get_bytes(const std::string& name) const;
  bool flag_set(const std::string& name) const;
  // The help text, wrapped at `width` columns with a hanging indent under each option.
  std::string help(size_t width = 100) const;

 private:
  struct Spec {
    std::string name, value_name, help, default_value;
    bool is_flag = false, required = false, positional = false, repeated = false;
  };
  const Spec* find(const std::string& name) const;
  std::string command_, summary_;
  std::vector<Spec> specs_;
  std::map<std::string, std::vector<std::string>> values_;
};

// The values of model_options() into an engine command's options (model_dir, dtype, device).
template <typename Options>
void read_model_options(const ArgParser& args, Options* o) {
  o->model_dir = args.get("model");
  o->dtype = args.get("dtype");
  o->device = args.get("device");
}

}  // namespace recall
