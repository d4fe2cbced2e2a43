//! The structured parts of an OpenAI chat request: messages with tool calls and tool results,
//! `tools`, `tool_choice`, `parallel_tool_calls`, `response_format` and `logprobs`, checked
//! strictly (every refusal names its parameter) into the request's [`Shape`].

use cocoon_protocol::inference::messages::{
    ChatMessage, MAX_CALL_ID, MAX_TOOL_CALLS, MAX_TOOL_NAME, MAX_TOOLS, MAX_TOP_LOGPROBS, ResponseFormat,
    Role, Shape, ToolCall, ToolChoice, ToolSpec,
};
use serde_json::{Map, Value};

use super::openai_request::{Invalid, invalid, text_content};

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A JSON Schema given as an object (kept as its JSON text).
fn schema_text(value: Option<&Value>, param: &'static str) -> Result<String, Invalid> {
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(v @ Value::Object(_)) => Ok(v.to_string()),
        Some(_) => Err(invalid(param, "a JSON Schema must be an object")),
    }
}

/// `tools`: functions only, each with a valid name and an object schema.
fn tools(map: &Map<String, Value>) -> Result<Vec<ToolSpec>, Invalid> {
    let list = match map.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("tools", "tools must be an array")),
    };
    if list.len() > MAX_TOOLS {
        return Err(invalid("tools", format!("at most {MAX_TOOLS} tools")));
    }
    let mut out: Vec<ToolSpec> = Vec::with_capacity(list.len());
    for value in list {
        let t = tool(value)?;
        if out.iter().any(|o| o.name == t.name) {
            return Err(invalid("tools", format!("two tools are named {:?}", t.name)));
        }
        out.push(t);
    }
    Ok(out)
}

/// One function tool: OpenAI's chat form `{"type": "function", "function": {name, description,
/// parameters}}`, or the Responses API's, with those fields on the tool itself.
pub fn tool(tool: &Value) -> Result<ToolSpec, Invalid> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(invalid("tools", "only tools of type \"function\" are supported"));
    }
    let function = tool.get("function").unwrap_or(tool);
    let name = function.get("name").and_then(Value::as_str).unwrap_or_default();
    if !valid_name(name) {
        return Err(invalid(
            "tools",
            format!("tool names are 1 to {MAX_TOOL_NAME} of a-z A-Z 0-9 _ -: {name:?}"),
        ));
    }
    let description = match function.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(d)) => d.clone(),
        Some(_) => return Err(invalid("tools", "a function's description must be a string")),
    };
    let parameters = schema_text(function.get("parameters"), "tools")?;
    Ok(ToolSpec { name: name.to_owned(), description, parameters })
}

/// `tool_choice`, which must name a declared tool and needs tools unless it is `none`.
fn tool_choice(map: &Map<String, Value>, tools: &[ToolSpec]) -> Result<ToolChoice, Invalid> {
    let choice = match map.get("tool_choice") {
        None | Some(Value::Null) => {
            return Ok(if tools.is_empty() { ToolChoice::None } else { ToolChoice::Auto });
        }
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(invalid("tool_choice", format!("unknown tool_choice {other:?}"))),
        },
        Some(o @ Value::Object(_)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            // Chat names the function under `function`, the Responses API on the choice.
            let name = o.get("function").unwrap_or(o).get("name").and_then(Value::as_str).unwrap_or_default();
            ToolChoice::Named(name.to_owned())
        }
        Some(_) => {
            return Err(invalid(
                "tool_choice",
                "tool_choice must be \"auto\", \"none\", \"required\" or a function",
            ));
        }
    };
    match &choice {
        ToolChoice::None => Ok(choice),
        _ if tools.is_empty() => Err(invalid("tool_choice", "tool_choice needs tools")),
        ToolChoice::Named(name) if !tools.iter().any(|t| &t.name == name) => {
            Err(invalid("tool_choice", format!("tool_choice names {name:?}, which is not among the tools")))
        }
        _ => Ok(choice),
    }
}

/// `response_format`: text, any JSON object, or JSON matching a schema.
fn response_format(map: &Map<String, Value>) -> Result<ResponseFormat, Invalid> {
    let Some(format) = map.get("response_format").filter(|f| !f.is_null()) else {
        return Ok(ResponseFormat::Text);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let schema = format.get("json_schema").and_then(|s| s.get("schema"));
            match schema_text(schema, "response_format")? {
                s if s.is_empty() => Err(invalid("response_format", "json_schema needs a schema")),
                s => Ok(ResponseFormat::JsonSchema(s)),
            }
        }
        _ => Err(invalid("response_format", "response_format type must be text, json_object or json_schema")),
    }
}

/// `logprobs` and `top_logprobs` (the latter needs the former).
fn logprobs(map: &Map<String, Value>) -> Result<Option<u8>, Invalid> {
    let on = match map.get("logprobs") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("logprobs", "logprobs must be a boolean")),
    };
    let top = match map.get("top_logprobs") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_u64() {
            Some(n) if n <= u64::from(MAX_TOP_LOGPROBS) => n as u8,
            _ => {
                return Err(invalid(
                    "top_logprobs",
                    format!("top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}"),
                ));
            }
        },
    };
    if top > 0 && !on {
        return Err(invalid("top_logprobs", "top_logprobs needs logprobs: true"));
    }
    Ok(on.then_some(top))
}

/// The shape of a chat request's answer.
pub fn chat_shape(map: &Map<String, Value>) -> Result<Shape, Invalid> {
    let tools = tools(map)?;
    let tool_choice = tool_choice(map, &tools)?;
    let parallel = match map.get("parallel_tool_calls") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("parallel_tool_calls", "parallel_tool_calls must be a boolean")),
    };
    // A forced call is always one call; a model choosing for itself may make several, which
    // cocoon cannot forbid without cutting the answer its receipt covers.
    if !parallel && tool_choice == ToolChoice::Auto {
        return Err(invalid(
            "parallel_tool_calls",
            "parallel_tool_calls: false is supported with tool_choice \"required\" or a named function",
        ));
    }
    Ok(Shape { tools, tool_choice, format: response_format(map)?, logprobs: logprobs(map)? })
}

fn tool_calls(value: Option<&Value>) -> Result<Vec<ToolCall>, Invalid> {
    let list = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) if list.len() <= MAX_TOOL_CALLS => list,
        Some(_) => {
            return Err(invalid(
                "messages",
                format!("tool_calls must be an array of at most {MAX_TOOL_CALLS}"),
            ));
        }
    };
    list.iter()
        .map(|call| {
            let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
            let function = call.get("function");
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
            let arguments = match function.and_then(|f| f.get("arguments")) {
                Some(Value::String(a)) => a.clone(),
                None | Some(Value::Null) => String::new(),
                Some(other) => other.to_string(),
            };
            if id.is_empty() || id.len() > MAX_CALL_ID || !valid_name(name) {
                return Err(invalid("messages", "a tool call needs an id and a valid function name"));
            }
            Ok(ToolCall { id: id.to_owned(), name: name.to_owned(), arguments })
        })
        .collect()
}

/// One message of a chat request.
pub fn chat_message(m: &Value) -> Result<ChatMessage, Invalid> {
    let role = match m.get("role").and_then(Value::as_str) {
        Some("system" | "developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") => Role::Tool,
        Some("function") => return Err(invalid("messages", "the function role is deprecated; use tools")),
        Some(other) => return Err(invalid("messages", format!("unsupported role {other:?}"))),
        None => return Err(invalid("messages", "every message needs a role")),
    };
    let content = text_content(m.get("content").unwrap_or(&Value::Null), "messages")?;
    let calls = tool_calls(m.get("tool_calls"))?;
    if !calls.is_empty() && role != Role::Assistant {
        return Err(invalid("messages", "only assistant messages carry tool_calls"));
    }
    let tool_call_id = match (role, m.get("tool_call_id").and_then(Value::as_str)) {
        (Role::Tool, Some(id)) if !id.is_empty() && id.len() <= MAX_CALL_ID => Some(id.to_owned()),
        (Role::Tool, _) => {
            return Err(invalid("messages", "a tool message needs the tool_call_id it answers"));
        }
        _ => None,
    };
    Ok(ChatMessage { role, content, tool_calls: calls, tool_call_id })
}
