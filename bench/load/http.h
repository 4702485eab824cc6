// The HTTP/1.1 pieces the etcd backend needs: request framing and a
// response parser (Content-Length and chunked bodies). No I/O.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "dynamo/status.h"

namespace dynamo::bench {

inline constexpr size_t kHttpHeaderBytesMax = 64u << 10;
inline constexpr size_t kHttpBodyBytesMax = 64u << 20;

struct HttpResponse {
  int status = 0;
  std::string body;
};

// A keep-alive POST of a JSON body.
std::string HttpPost(std::string_view host, std::string_view path, std::string_view json);

class HttpResponseParser {
 public:
  // Takes the next bytes of the stream. Returns the response once it is
  // complete (bytes after it are kept for the next one), nothing while it is
  // not, ProtocolError for malformed or oversize input.
  Result<std::optional<HttpResponse>> Feed(std::string_view bytes);

 private:
  Result<std::optional<HttpResponse>> Parse();

  std::string buffer_;
};

// Standard base64 with padding.
std::string Base64(std::string_view bytes);

}  // namespace dynamo::bench
