//! OpenAI's Responses API and Anthropic's Messages API on a client node, end to end through the
//! confidential path (in-process nodes, mistral.rs on the tiny random-weight GGUF): whole and
//! streamed answers in each API's own shapes and event sequences, forced tool calls whose input
//! follows the schema, and errors in each API's own shape. (The official SDKs run against the
//! devnet in `tests/sdk/`.)

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::inference::{TinyNet, post};
use serde_json::{Value, json};

/// POST `body` to `path` and read the event stream: each event's name and data.
async fn events(api: std::net::SocketAddr, path: &str, body: &Value) -> (u16, Vec<(String, Value)>) {
    let response =
        reqwest::Client::new().post(format!("http://{api}{path}")).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = String::new();
        let mut data = Value::Null;
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_owned();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = serde_json::from_str(d).unwrap_or(Value::Null);
            }
        }
        out.push((name, data));
    }
    (status, out)
}

fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string", "enum": ["Oslo", "Lima"]}},
           "required": ["city"], "additionalProperties": false})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_messages_whole_streamed_with_tools_and_errors() {
    let net = TinyNet::start(4).await;
    let body = json!({"model": net.model, "max_tokens": 8, "system": "be brief",
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]});
    let (status, answer) = post(net.api(), "/v1/messages", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["type"].as_str(), answer["role"].as_str()), (Some("message"), Some("assistant")));
    assert!(answer["id"].as_str().unwrap().starts_with("msg_"));
    assert!(["end_turn", "max_tokens"].contains(&answer["stop_reason"].as_str().unwrap()), "{answer}");
    assert!(answer["usage"]["output_tokens"].as_u64().unwrap() <= 8);
    assert!(answer["usage"]["input_tokens"].as_u64().unwrap() > 0);

    // A forced tool: a tool_use block whose input follows the input schema.
    let tools = json!([{"name": "get_weather", "description": "weather", "input_schema": weather_schema()}]);
    let forced = json!({"model": net.model, "max_tokens": 64, "tools": tools,
                        "tool_choice": {"type": "tool", "name": "get_weather"},
                        "messages": [{"role": "user", "content": "weather in Oslo?"}]});
    let (status, answer) = post(net.api(), "/v1/messages", forced.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["stop_reason"], "tool_use", "{answer}");
    let block = answer["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap();
    assert_eq!(block["name"], "get_weather");
    assert!(["Oslo", "Lima"].contains(&block["input"]["city"].as_str().unwrap()), "{block}");

    // The tool result in the next turn, streamed: Anthropic's event sequence.
    let turn = json!({"model": net.model, "max_tokens": 6, "stream": true, "tools": tools,
        "messages": [{"role": "user", "content": "weather in Oslo?"},
                     {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "cold"}]}]});
    let (status, stream) = events(net.api(), "/v1/messages", &turn).await;
    assert_eq!(status, 200, "{stream:?}");
    let names: Vec<&str> = stream.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"], "{names:?}");
    let starts = names.iter().filter(|n| **n == "content_block_start").count();
    assert_eq!(starts, names.iter().filter(|n| **n == "content_block_stop").count(), "{names:?}");
    let delta = &stream[stream.len() - 2].1;
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() >= 1, "{delta}");

    // Errors in Anthropic's shape.
    let (status, answer) =
        post(net.api(), "/v1/messages", json!({"model": net.model, "messages": []}).to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(
        (answer["type"].as_str(), answer["error"]["type"].as_str()),
        (Some("error"), Some("invalid_request_error"))
    );
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_whole_streamed_with_a_function_call_and_errors() {
    let net = TinyNet::start(4).await;
    let body = json!({"model": net.model, "input": "hi", "instructions": "be brief", "max_output_tokens": 6});
    let (status, answer) = post(net.api(), "/v1/responses", body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "response");
    assert!(["completed", "incomplete"].contains(&answer["status"].as_str().unwrap()), "{answer}");
    let item = &answer["output"][0];
    assert_eq!(
        (item["type"].as_str(), item["content"][0]["type"].as_str()),
        (Some("message"), Some("output_text"))
    );
    assert!(answer["usage"]["output_tokens"].as_u64().unwrap() <= 6);

    // Streamed: created, in progress, the item and its deltas, then the final response.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, stream) = events(net.api(), "/v1/responses", &streamed).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = stream.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[..2], ["response.created", "response.in_progress"], "{names:?}");
    assert!(["response.completed", "response.incomplete"].contains(names.last().unwrap()), "{names:?}");
    let text: String = stream
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    let last = &stream.last().unwrap().1["response"];
    assert_eq!(last["output"][0]["content"][0]["text"].as_str().unwrap(), text);
    let sequence: Vec<u64> = stream.iter().map(|(_, d)| d["sequence_number"].as_u64().unwrap()).collect();
    assert!(sequence.windows(2).all(|w| w[1] == w[0] + 1), "{sequence:?}");

    // A forced function call, then its output as the next input.
    let tools = json!([{"type": "function", "name": "get_weather", "description": "weather", "parameters": weather_schema()}]);
    let forced = json!({"model": net.model, "input": "weather in Oslo?", "tools": tools, "max_output_tokens": 64,
                        "tool_choice": {"type": "function", "name": "get_weather"}});
    let (status, answer) = post(net.api(), "/v1/responses", forced.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let call = answer["output"].as_array().unwrap().iter().find(|i| i["type"] == "function_call").unwrap();
    let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(["Oslo", "Lima"].contains(&arguments["city"].as_str().unwrap()), "{call}");
    let next = json!({"model": net.model, "tools": tools, "max_output_tokens": 4, "input": [
        {"role": "user", "content": "weather in Oslo?"},
        {"type": "function_call", "call_id": call["call_id"], "name": "get_weather", "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "cold"}]});
    let (status, answer) = post(net.api(), "/v1/responses", next.to_string()).await;
    assert_eq!(status, 200, "{answer}");

    let (status, answer) = post(
        net.api(),
        "/v1/responses",
        json!({"model": net.model, "input": "x", "previous_response_id": "resp_1"}).to_string(),
    )
    .await;
    assert_eq!((status, answer["error"]["param"].as_str()), (400, Some("previous_response_id")), "{answer}");
    net.stop().await;
}
