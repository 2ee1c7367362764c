#include "tools/reflect/serve_examples.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace reflect::cli {

std::string ServeExamples(const std::string& host, int grpc_port, int http_port,
                          const std::string& model_name) {
  const std::string client_host = host == "0.0.0.0" ? "127.0.0.1" : host;
  const std::string grpc = absl::StrCat(client_host, ":", grpc_port);
  const std::string http = absl::StrCat("http://", client_host, ":", http_port);
  constexpr char kTemplate[] = R"banner(
reflect is serving {model}
  gRPC  (reflect.v1.Inference, health, reflection)  {grpc}
  HTTP  (OpenAI-compatible /v1, /metrics, /healthz)  {http}

# gRPC, with grpcurl (server reflection lists everything):
grpcurl -plaintext {grpc} list
grpcurl -plaintext -d '{"messages": [{"role": "ROLE_USER", "content": "Why is the sky blue?"}], "add_reflection_system_prompt": true, "sampling": {"max_tokens": 64}}' {grpc} reflect.v1.Inference/Chat

# HTTP, with curl (streaming chat completion):
curl -N {http}/v1/chat/completions -H 'Content-Type: application/json' -d '{"model": "{model}", "messages": [{"role": "user", "content": "Why is the sky blue?"}], "max_tokens": 64, "stream": true}'

# The OpenAI Python client (pip install openai):
python3 -c "
from openai import OpenAI
client = OpenAI(base_url='{http}/v1', api_key='unused')
for chunk in client.chat.completions.create(model='{model}', max_tokens=64, stream=True,
        messages=[{'role': 'user', 'content': 'Why is the sky blue?'}]):
    print(chunk.choices[0].delta.content or '', end='', flush=True)
print()"

Metrics: curl {http}/metrics     Stop: Ctrl-C
)banner";
  return absl::StrReplaceAll(kTemplate,
                             {{"{model}", model_name}, {"{grpc}", grpc}, {"{http}", http}});
}

}  // namespace reflect::cli
