// `aquakv inspect -m FILE`: prints a GGUF file's header, metadata and tensor table (like
// gguf-dump). A file that fails validation gives the one-line error and exit status 1.
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "aquakv/engine/gguf.h"
#include "command.h"

namespace aquakv::cli {
namespace {

std::string escaped(const std::string& s, size_t max_chars) {
  std::string out;
  for (char c : s) {
    if (out.size() >= max_chars) {
      out += "...";
      break;
    }
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += '?';
    } else {
      out += c;
    }
  }
  return out;
}

std::string scalar_text(const GgufValue& v) {
  if (const auto* s = std::get_if<std::string>(&v.v)) return "\"" + escaped(*s, 60) + "\"";
  if (const auto* b = std::get_if<bool>(&v.v)) return *b ? "true" : "false";
  if (const auto* u = std::get_if<uint64_t>(&v.v)) return std::to_string(*u);
  if (const auto* i = std::get_if<int64_t>(&v.v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v.v)) {
    // F32 values print as the float they are (shortest round-trip), not as widened doubles.
    return v.type == GgufValueType::F32 ? fmt::format("{}", float(*d)) : fmt::format("{}", *d);
  }
  return "";
}

// Arrays print their element type, length and the first few items.
std::string value_text(const GgufValue& v, size_t show) {
  if (v.type != GgufValueType::ARRAY) return scalar_text(v);
  const auto& a = std::get<GgufValue::Array>(v.v);
  std::string out = "[";
  size_t i = 0;
  a.for_each([&](const GgufValue& item) {
    if (i < show) out += (i > 0 ? ", " : "") + value_text(item, 3);
    ++i;
  });
  if (a.size() > show) out += ", ...";
  return out + "]";
}

std::string type_text(const GgufValue& v) {
  if (v.type != GgufValueType::ARRAY) return std::string(gguf_value_type_name(v.type));
  const auto& a = std::get<GgufValue::Array>(v.v);
  return fmt::format("{}[{}]", gguf_value_type_name(a.elem_type), a.size());
}

int run(const std::string& path, bool no_tensors) {
  // Types aquakv cannot run (IQ*, ...) are still listed here; `generate` refuses them.
  const std::unique_ptr<GgufFile> f = GgufFile::open(path, {.allow_unsupported_types = true});
  std::printf("%s: GGUF v%u, %llu bytes, %zu key/values, %zu tensors, alignment %llu, data at %llu\n",
              path.c_str(), f->version(), static_cast<unsigned long long>(f->file_size()),
              f->metadata().size(), f->tensors().size(),
              static_cast<unsigned long long>(f->alignment()),
              static_cast<unsigned long long>(f->data_offset()));
  std::printf("\n* metadata\n");
  size_t i = 0;
  for (const auto& [key, value] : f->metadata()) {
    std::printf("%5zu: %-14s %-40s = %s\n", ++i, type_text(value).c_str(), key.c_str(),
                value_text(value, 6).c_str());
  }
  if (no_tensors) return 0;
  std::printf("\n* tensors\n");
  i = 0;
  for (const auto& t : f->tensors()) {
    std::string shape;
    for (size_t d = 0; d < t.shape.size(); ++d) shape += (d ? " x " : "") + std::to_string(t.shape[d]);
    std::printf("%5zu: %-32s %-5s %-22s offset %-11llu bytes %lld\n", ++i, t.name.c_str(),
                std::string(ggml_type_name(t.type)).c_str(), shape.c_str(),
                static_cast<unsigned long long>(t.offset), static_cast<long long>(t.n_bytes));
  }
  return 0;
}

const CommandRegistrar reg{
    "inspect", "print a GGUF file's metadata and tensor table", [](CLI::App& sub) {
      auto model = std::make_shared<std::string>(default_model_path());
      auto no_tensors = std::make_shared<bool>(false);
      sub.add_option("-m,--model", *model, "GGUF file")->capture_default_str();
      sub.add_flag("--no-tensors", *no_tensors, "print only the header and metadata");
      return RunFn([model, no_tensors] { return run(*model, *no_tensors); });
    }};

}  // namespace
}  // namespace aquakv::cli
