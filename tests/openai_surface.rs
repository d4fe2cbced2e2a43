//! The OpenAI surface beyond plain text, end to end through the confidential path (in-process
//! nodes, real libp2p and Noise, mistral.rs on the tiny random-weight GGUF): forced tool calls
//! whose arguments follow the function's schema even though the model was never trained for
//! tools (constrained decoding), streamed exactly as OpenAI streams `tool_calls`; a two-turn tool
//! conversation; `json_schema` output; `logprobs` with `top_logprobs`; `n` answers; and a worker
//! that changes a tool call's arguments on the wire after signing the real ones, whose answer the
//! client refuses.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use cocoon::config::Role;
use cocoon::node::{Extras, Node};
use common::adversary::{Mischief, misbehave};
use common::inference::{TinyNet, boot, client, post, post_sse, tiny_model, wait_for_workers, worker};
use common::inproc::{config, start};
use serde_json::{Value, json};

/// Arguments of the test's function: a city from a fixed list and a unit.
fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Oslo", "Lima", "Pune"]},
                "unit": {"type": "string", "enum": ["C", "F"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": false,
        },
    }})
}

fn other_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_time",
        "description": "The time in a zone.",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
                       "required": ["zone"], "additionalProperties": false},
    }})
}

/// Whether `arguments` (JSON text) match `get_weather`'s schema.
fn weather_arguments_ok(arguments: &str) -> bool {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(arguments) else { return false };
    let city = map.get("city").and_then(Value::as_str);
    let unit = map.get("unit").and_then(Value::as_str);
    map.len() == 2
        && city.is_some_and(|c| ["Oslo", "Lima", "Pune"].contains(&c))
        && unit.is_some_and(|u| ["C", "F"].contains(&u))
}

async fn chat(net: &TinyNet, body: Value) -> (u16, Value) {
    post(net.api(), "/v1/chat/completions", body.to_string()).await
}

fn ask(model: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
        "max_tokens": 96,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_tool_call_follows_the_schema_whole_and_streamed() {
    let net = TinyNet::start(4).await;
    let named = json!({"tools": [weather_tool(), other_tool()],
                       "tool_choice": {"type": "function", "function": {"name": "get_weather"}}});
    let (status, answer) = chat(&net, ask(&net.model, named.clone())).await;
    assert_eq!(status, 200, "{answer}");
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    assert!(choice["message"]["content"].is_null(), "{answer}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let arguments = call["function"]["arguments"].as_str().unwrap();
    assert!(weather_arguments_ok(arguments), "arguments {arguments:?} do not match the schema");

    // Streamed: the first piece names the call, later pieces carry only more arguments.
    let mut body = ask(&net.model, named);
    body["stream"] = json!(true);
    let sse = post_sse(net.api(), &body).await;
    assert_eq!(sse.status, 200);
    assert!(sse.done);
    let pieces: Vec<&Value> =
        sse.events.iter().filter_map(|(_, e)| e["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    assert!(pieces.len() > 1, "{:?}", sse.events);
    assert_eq!(pieces[0]["function"]["name"], "get_weather");
    assert_eq!(pieces[0]["type"], "function");
    assert!(pieces[1..].iter().all(|p| p.get("id").is_none() && p["index"] == 0));
    let streamed: String = pieces.iter().map(|p| p["function"]["arguments"].as_str().unwrap()).collect();
    assert!(weather_arguments_ok(&streamed), "streamed arguments {streamed:?}");
    let last = &sse.events.iter().rev().find(|(_, e)| !e["choices"][0]["finish_reason"].is_null()).unwrap().1;
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tool_choice_a_tool_conversation_and_structured_output() {
    let net = TinyNet::start(4).await;
    // `required` with two tools: a call of one of them, with that tool's arguments.
    let required =
        json!({"tools": [weather_tool(), other_tool()], "tool_choice": "required", "max_tokens": 128});
    let (status, answer) = chat(&net, ask(&net.model, required)).await;
    assert_eq!(status, 200, "{answer}");
    let call = &answer["choices"][0]["message"]["tool_calls"][0]["function"];
    let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    match call["name"].as_str().unwrap() {
        "get_weather" => assert!(weather_arguments_ok(&arguments.to_string()), "{arguments}"),
        "get_time" => assert!(["UTC", "CET"].contains(&arguments["zone"].as_str().unwrap()), "{arguments}"),
        other => panic!("called {other}"),
    }

    // The second turn: the call and its result in the history, a text answer back.
    let second = json!({
        "model": net.model, "max_tokens": 8, "tools": [weather_tool()],
        "messages": [
            {"role": "user", "content": "What is the weather in Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
              "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\",\"unit\":\"C\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "-3 and snowing"},
        ],
        "tool_choice": "none",
    });
    let (status, answer) = chat(&net, second).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["choices"][0]["message"]["tool_calls"].is_null(), "{answer}");
    assert!(
        answer["usage"]["prompt_tokens"].as_u64().unwrap() > 20,
        "the history reached the model: {answer}"
    );

    // `json_schema`: the text parses and matches.
    let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}, "size": {"enum": ["S", "M"]}},
                        "required": ["ok", "size"], "additionalProperties": false});
    let format = json!({"response_format": {"type": "json_schema", "json_schema": {"name": "v", "schema": schema, "strict": true}}});
    let (status, answer) = chat(&net, ask(&net.model, format)).await;
    assert_eq!(status, 200, "{answer}");
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"));
    assert!(value["ok"].is_boolean() && ["S", "M"].contains(&value["size"].as_str().unwrap()), "{value}");
    assert_eq!(value.as_object().unwrap().len(), 2);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_n_answers_and_refused_combinations() {
    let net = TinyNet::start(4).await;
    let (status, answer) =
        chat(&net, ask(&net.model, json!({"logprobs": true, "top_logprobs": 3, "max_tokens": 5}))).await;
    assert_eq!(status, 200, "{answer}");
    let content = answer["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len() as u64, answer["usage"]["completion_tokens"].as_u64().unwrap(), "{answer}");
    for token in content {
        let lp = token["logprob"].as_f64().unwrap();
        assert!((-9999.0..=0.0).contains(&lp), "{token}");
        assert_eq!(token["top_logprobs"].as_array().unwrap().len(), 3, "{token}");
    }

    // `n: 2`: two answers, each its own request (two receipts), usage summed.
    let (status, answer) = chat(&net, ask(&net.model, json!({"n": 2, "max_tokens": 4}))).await;
    assert_eq!(status, 200, "{answer}");
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!((choices[0]["index"].as_u64(), choices[1]["index"].as_u64()), (Some(0), Some(1)));
    let receipts = answer["cocoon"]["answers"].as_array().unwrap();
    assert_eq!(receipts.len(), 2);
    assert_ne!(receipts[0]["receipt"], receipts[1]["receipt"]);
    let mut body = ask(&net.model, json!({"n": 2, "max_tokens": 4, "stream": true}));
    body["stream_options"] = json!({"include_usage": true});
    let sse = post_sse(net.api(), &body).await;
    let finished: Vec<u64> = sse
        .events
        .iter()
        .filter(|(_, e)| !e["choices"][0]["finish_reason"].is_null())
        .map(|(_, e)| e["choices"][0]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(finished.len(), 2, "{:?}", sse.events);
    assert!(finished.contains(&0) && finished.contains(&1));

    // What cannot be honoured is refused, naming the parameter.
    for (extra, param) in [
        (json!({"seed": 4}), "seed"),
        (json!({"logit_bias": {"11": 5}}), "logit_bias"),
        (json!({"tools": [weather_tool()], "parallel_tool_calls": false}), "parallel_tool_calls"),
        (
            json!({"tools": [weather_tool()], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
        ),
        (json!({"n": 9}), "n"),
    ] {
        let (status, answer) = chat(&net, ask(&net.model, extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {answer}");
        assert_eq!(answer["error"]["param"], param, "{extra}: {answer}");
    }
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_arguments_changed_on_the_wire_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (boot, boot_addr) = boot(dir.path()).await;
    let wc = worker(config(&dir.path().join("liar"), Role::Worker, Some(&boot_addr)), &model, 0, 2);
    let extras = Extras { streams_served_by_process: true, ..Default::default() };
    let liar = Node::start_with(wc, cocoon::network::TransportKind::Memory, None, extras).await.unwrap();
    let serving = misbehave(&liar, &dir.path().join("liar"), Mischief::FlipToolArguments, 0);
    let client_node = start(client(config(&dir.path().join("client"), Role::Client, Some(&boot_addr)))).await;
    let model_id = wait_for_workers(&client_node, 1).await;
    let body = ask(&model_id, json!({"tools": [weather_tool()], "tool_choice": "required"}));
    let (status, answer) =
        post(client_node.api_addr().unwrap(), "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, 502, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("does not match the answer received"), "{message}");
    serving.abort();
    for node in [client_node, liar, boot] {
        node.shutdown().await.unwrap();
    }
}
