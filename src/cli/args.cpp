// Command-line parsing for recall's subcommands.
#include "recall/cli/args.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <sstream>

#include "recall/util/byte_size.h"
#include "recall/util/error.h"
#include "recall/util/numbers.h"

namespace recall {

namespace {

constexpr size_t kOptionColumn = 28;  // where option help starts, and its continuation lines

// The terminal's width when stdout is one (60-120 columns), else 100: pipes and logs get the
// same text everywhere.
size_t help_width() {
  struct winsize ws {};
  if (::isatty(STDOUT_FILENO) && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    return std::clamp<size_t>(ws.ws_col - 1, 60, 120);
  return 100;
}

// Appends `text` wrapped at `width` columns, its first line continuing at column `col` and every
// further line indented by `indent` (a hanging indent). Newlines in `text` are kept; a word longer
// than a line stands alone on its line.
void put_wrapped(std::ostream& os, const std::string& text, size_t col, size_t indent, size_t width) {
  std::istringstream lines(text);
  bool first_line = true;
  for (std::string line; std::getline(lines, line);) {
    if (!first_line) os << "\n" << std::string(indent, ' '), col = indent;
    first_line = false;
    std::istringstream words(line);
    bool line_empty = true;
    for (std::string w; words >> w;) {
      if (!line_empty && col + 1 + w.size() > width) os << "\n" << std::string(indent, ' '), col = indent, line_empty = true;
      if (!line_empty) os << ' ', ++col;
      os << w;
      col += w.size();
      line_empty = false;
    }
  }
}

}  // namespace

ArgParser::ArgParser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

ArgParser& ArgParser::option(const std::string& name, const std::string& value_name,
                             const std::string& help, const std::string& default_value,
                             bool required) {
  specs_.push_back({name, value_name, help, default_value, false, required, false});
  return *this;
}

ArgParser& ArgParser::repeated(const std::string& name, const std::string& value_name,
                               const std::string& help) {
  specs_.push_back({name, value_name, help, "", false, false, false, true});
  return *this;
}

ArgParser& ArgParser::flag(const std::string& name, const std::string& help) {
  specs_.push_back({name, "", help, "", true, false, false});
  return *this;
}

ArgParser& ArgParser::positional(const std::string& name, const std::string& help, bool required) {
  specs_.push_back({name, "", help, "", false, required, true});
  return *this;
}

const ArgParser::Spec* ArgParser::find(const std::string& name) const {
  for (const Spec& s : specs_)
    if (s.name == name) return &s;
  return nullptr;
}

bool ArgParser::parse(int argc, char** argv) {
  std::vector<const Spec*> positionals;
  for (const Spec& s : specs_)
    if (s.positional) positionals.push_back(&s);
  size_t next_positional = 0;
  const std::string hint = "; see 'recall " + command_ + " --help'";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::cout << help(help_width());
      return false;
    }
    if (a.size() > 2 && a.compare(0, 2, "--") == 0) {
      std::string key = a.substr(2), value;
      bool has_inline = false;
      if (auto eq = key.find('='); eq != std::string::npos) {
        value = key.substr(eq + 1);
        key = key.substr(0, eq);
        has_inline = true;
      }
      const Spec* s = find(key);
      if (!s || s->positional) fail("recall ", command_, ": unknown option '--", key, "'", hint);
      if (s->is_flag) {
        if (has_inline) fail("recall ", command_, ": flag '--", key, "' takes no value", hint);
        values_[key] = {"1"};
        continue;
      }
      if (!has_inline) {
        if (i + 1 >= argc) fail("recall ", command_, ": option '--", key, "' needs a value (", s->value_name, ")", hint);
        value = argv[++i];
      }
      if (s->repeated) values_[key].push_back(value);
      else values_[key] = {value};
      continue;
    }
    if (next_positional >= positionals.size())
      fail("recall ", command_, ": unexpected argument '", a, "'", hint);
    values_[positionals[next_positional++]->name] = {a};
  }
  for (const Spec& s : specs_)
    if (s.required && !values_.count(s.name))
      fail("recall ", command_, ": missing ", s.positional ? "argument " + s.name : "option --" + s.name, hint);
  return true;
}

bool ArgParser::has(const std::string& name) const { return values_.count(name) > 0; }

std::string ArgParser::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it != values_.end()) return it->second.back();
  const Spec* s = find(name);
  return s ? s->default_value : "";
}

std::vector<std::string> ArgParser::get_all(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

double ArgParser::get_number(const std::string& name) const {
  const std::string v = get(name);
  const auto x = parse_double(v);
  if (!x) fail("recall ", command_, ": --", name, " must be a number, got '", v, "'");
  return *x;
}

uint64_t ArgParser::get_bytes(const std::string& name) const {
  return parse_byte_size_or_fail(get(name), "--" + name);
}

int64_t ArgParser::get_integer(const std::string& name, int64_t min) const {
  const std::string v = get(name);
  const auto x = parse_int64(v);
  if (!x || *x < min) fail("recall ", command_, ": --", name, " must be an integer >= ", min, ", got '", v, "'");
  return *x;
}

ArgParser& ArgParser::model_options() {
  return option("model", "DIR", "Hugging Face model directory", "", true)
      .option("dtype", "DTYPE", "compute dtype: float32, bfloat16 or float16", "float32")
      .option("device", "DEVICE", "cpu, cuda or cuda:N", "cpu");
}

bool ArgParser::flag_set(const std::string& name) const { return values_.count(name) > 0; }

std::string ArgParser::help(size_t width) const {
  std::ostringstream os;
  os << "usage: recall " << command_;
  for (const Spec& s : specs_)
    if (s.positional) os << (s.required ? " " : " [") << s.name << (s.required ? "" : "]");
  os << " [options]\n\n";
  put_wrapped(os, summary_, 0, 0, width);
  os << "\n";
  // One entry: the name in the left column, the help wrapped beside it with a hanging indent.
  auto entry = [&](const std::string& left, std::string text) {
    std::replace(text.begin(), text.end(), '\n', ' ');  // breaks written for the old, unwrapped layout
    os << left;
    if (left.size() < kOptionColumn) os << std::string(kOptionColumn - left.size(), ' ');
    else os << "\n" << std::string(kOptionColumn, ' ');
    put_wrapped(os, text, kOptionColumn, kOptionColumn, width);
    os << "\n";
  };
  bool header = false;
  for (const Spec& s : specs_)
    if (s.positional) {
      if (!header) os << "\narguments:\n", header = true;
      entry("  " + s.name, s.help);
    }
  os << "\noptions:\n";
  for (const Spec& s : specs_) {
    if (s.positional) continue;
    std::string text = s.help;
    if (s.required) text += " (required)";
    else if (s.repeated) text += " (repeatable)";
    else if (!s.default_value.empty()) text += " (default: " + s.default_value + ")";
    entry("  --" + s.name + (s.is_flag ? "" : " " + s.value_name), text);
  }
  entry("  -h, --help", "print this help");
  return os.str();
}

}  // namespace recall
