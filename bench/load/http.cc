#include "load/http.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace dynamo::bench {

std::string HttpPost(std::string_view host, std::string_view path, std::string_view json) {
  std::string r;
  r.reserve(128 + json.size());
  r.append("POST ").append(path).append(" HTTP/1.1\r\nHost: ").append(host);
  r.append("\r\nContent-Type: application/json\r\nContent-Length: ").append(std::to_string(json.size()));
  r.append("\r\n\r\n").append(json);
  return r;
}

namespace {

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Parses a non-negative number in `base`; nullopt if it is not one or too big.
std::optional<size_t> Number(std::string_view s, int base) {
  s = Trim(s);
  if (s.empty() || s.size() > 16) return std::nullopt;
  size_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (base == 16 && c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (base == 16 && c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return std::nullopt;
    v = v * static_cast<size_t>(base) + static_cast<size_t>(d);
  }
  return v;
}

}  // namespace

Result<std::optional<HttpResponse>> HttpResponseParser::Feed(std::string_view bytes) {
  buffer_.append(bytes);
  return Parse();
}

Result<std::optional<HttpResponse>> HttpResponseParser::Parse() {
  const size_t head_end = buffer_.find("\r\n\r\n");
  if (head_end == std::string::npos) {
    if (buffer_.size() > kHttpHeaderBytesMax) return Status::ProtocolError("HTTP header too large");
    return std::optional<HttpResponse>();
  }
  if (head_end > kHttpHeaderBytesMax) return Status::ProtocolError("HTTP header too large");
  std::string_view head(buffer_.data(), head_end);
  size_t line_end = head.find("\r\n");
  std::string_view status_line = head.substr(0, line_end);
  if (status_line.substr(0, 5) != "HTTP/" || status_line.find(' ') == std::string_view::npos) {
    return Status::ProtocolError("not an HTTP response");
  }
  std::optional<size_t> code = Number(status_line.substr(status_line.find(' ') + 1, 3), 10);
  if (!code) return Status::ProtocolError("bad HTTP status line");
  std::optional<size_t> length;
  bool chunked = false;
  while (line_end != std::string_view::npos) {
    head.remove_prefix(line_end + 2);
    line_end = head.find("\r\n");
    std::string_view line = head.substr(0, line_end);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = Trim(line.substr(0, colon)), value = Trim(line.substr(colon + 1));
    if (IEquals(name, "content-length")) {
      length = Number(value, 10);
      if (!length) return Status::ProtocolError("bad Content-Length");
    } else if (IEquals(name, "transfer-encoding")) {
      chunked = IEquals(value, "chunked");
    }
  }
  HttpResponse response;
  response.status = static_cast<int>(*code);
  size_t pos = head_end + 4;
  if (chunked) {
    while (true) {
      const size_t size_end = buffer_.find("\r\n", pos);
      if (size_end == std::string::npos) return std::optional<HttpResponse>();
      std::string_view size_line(buffer_.data() + pos, size_end - pos);
      size_line = size_line.substr(0, size_line.find(';'));
      std::optional<size_t> size = Number(size_line, 16);
      if (!size) return Status::ProtocolError("bad chunk size");
      if (response.body.size() + *size > kHttpBodyBytesMax) return Status::ProtocolError("HTTP body too large");
      if (*size == 0) {
        const size_t trailer_end = buffer_.find("\r\n\r\n", size_end);
        if (trailer_end == std::string::npos) return std::optional<HttpResponse>();
        pos = trailer_end + 4;
        break;
      }
      if (buffer_.size() < size_end + 2 + *size + 2) return std::optional<HttpResponse>();
      response.body.append(buffer_, size_end + 2, *size);
      pos = size_end + 2 + *size + 2;
    }
  } else {
    const size_t n = length.value_or(0);
    if (n > kHttpBodyBytesMax) return Status::ProtocolError("HTTP body too large");
    if (buffer_.size() < pos + n) return std::optional<HttpResponse>();
    response.body = buffer_.substr(pos, n);
    pos += n;
  }
  buffer_.erase(0, pos);
  return std::optional<HttpResponse>(std::move(response));
}

std::string Base64(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16 |
                       static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8 |
                       static_cast<unsigned char>(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  if (const size_t rest = bytes.size() - i; rest > 0) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (rest == 2) v |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace dynamo::bench
