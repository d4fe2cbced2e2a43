//! How a request's shape steers generation: a forced tool call (`required` or a named function)
//! becomes constrained decoding on the function's argument schema plus an instruction to the
//! model, so it works even with a model never trained for tools; a response format becomes
//! constrained decoding on its schema; `auto` leaves the model its own tool-call format. And how
//! the text generated under a forced call becomes tool-call events ([`CallStream`]).

use cocoon_protocol::inference::messages::{
    ChatMessage, Event, ResponseFormat, Role, Shape, ToolCallDelta, ToolChoice, ToolSpec,
};
use serde_json::{Value, json};

/// What constrains generation.
#[derive(Debug, Clone, PartialEq)]
pub enum Steering {
    /// Nothing: free text (with `auto` tools, the model's own tool-call format).
    Free,
    /// JSON matching `schema` (a response format).
    Json(Value),
    /// The arguments of a call to `name`, matching its schema.
    Call {
        /// The function.
        name: String,
        /// Its argument schema.
        schema: Value,
    },
    /// One call of any declared tool, as `{"name": …, "arguments": …}` matching `schema`.
    AnyCall(Value),
}

impl Steering {
    /// The JSON schema generation is constrained to, if any.
    pub fn schema(&self) -> Option<&Value> {
        match self {
            Self::Free => None,
            Self::Json(s) | Self::Call { schema: s, .. } | Self::AnyCall(s) => Some(s),
        }
    }
}

fn parse_schema(text: &str, what: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ (Value::Object(_) | Value::Bool(_))) => Ok(v),
        Ok(_) => Err(format!("{what} must be a JSON Schema object")),
        Err(e) => Err(format!("{what} is not valid JSON: {e}")),
    }
}

/// The argument schema of `tool` (`{}` and an empty text both mean any object).
fn arguments_schema(tool: &ToolSpec) -> Result<Value, String> {
    if tool.parameters.trim().is_empty() {
        return Ok(json!({"type": "object"}));
    }
    parse_schema(&tool.parameters, &format!("the parameters of tool {:?}", tool.name))
}

/// `schema` with llguidance's option for compact JSON (no whitespace between tokens): a model
/// left free to add whitespace inside a constrained object can spend every token on it. Any
/// `x-guidance` options a client sent are replaced (they are the engine's, not the request's).
fn compact(schema: Value) -> Value {
    let mut object = match schema {
        Value::Object(map) => map,
        // `true` accepts anything; `false` nothing (the engine reports it unsatisfiable).
        Value::Bool(true) => serde_json::Map::new(),
        other => return other,
    };
    object.insert("x-guidance".into(), json!({"whitespace_flexible": false}));
    Value::Object(object)
}

/// How `shape` steers generation, or why it cannot.
pub fn steering(shape: &Shape) -> Result<Steering, String> {
    Ok(match uncompacted(shape)? {
        Steering::Free => Steering::Free,
        Steering::Json(s) => Steering::Json(compact(s)),
        Steering::Call { name, schema } => Steering::Call { name, schema: compact(schema) },
        Steering::AnyCall(s) => Steering::AnyCall(compact(s)),
    })
}

fn uncompacted(shape: &Shape) -> Result<Steering, String> {
    let tool = |name: &str| shape.tools.iter().find(|t| t.name == name);
    match &shape.tool_choice {
        ToolChoice::Named(name) => {
            let t = tool(name)
                .ok_or_else(|| format!("tool_choice names {name:?}, which is not among the tools"))?;
            return Ok(Steering::Call { name: name.clone(), schema: arguments_schema(t)? });
        }
        ToolChoice::Required => match shape.tools.as_slice() {
            [] => return Err("tool_choice \"required\" needs at least one tool".into()),
            [only] => return Ok(Steering::Call { name: only.name.clone(), schema: arguments_schema(only)? }),
            tools => {
                let calls = tools
                    .iter()
                    .map(|t| {
                        Ok(json!({
                            "type": "object",
                            "properties": {"name": {"const": t.name}, "arguments": arguments_schema(t)?},
                            "required": ["name", "arguments"],
                            "additionalProperties": false,
                        }))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                return Ok(Steering::AnyCall(json!({"anyOf": calls})));
            }
        },
        ToolChoice::Auto | ToolChoice::None => {}
    }
    match &shape.format {
        ResponseFormat::Text => Ok(Steering::Free),
        ResponseFormat::JsonObject => Ok(Steering::Json(json!({"type": "object"}))),
        ResponseFormat::JsonSchema(schema) => Ok(Steering::Json(parse_schema(schema, "the json_schema")?)),
    }
}

/// What the model is told when a call is forced: which function(s), what they do, and that the
/// answer is their arguments as JSON (the constraint enforces the form; this gives it meaning).
fn instruction(shape: &Shape, steering: &Steering) -> Option<String> {
    let describe =
        |t: &ToolSpec| format!("- {}: {} Arguments (JSON Schema): {}", t.name, t.description, t.parameters);
    match steering {
        Steering::Call { name, .. } => {
            let t = shape.tools.iter().find(|t| &t.name == name)?;
            Some(format!(
                "Call the function {name}. Reply with only its arguments as a JSON object.\n{}",
                describe(t)
            ))
        }
        Steering::AnyCall(_) => Some(format!(
            "Call one of these functions. Reply with only a JSON object {{\"name\": ..., \"arguments\": {{...}}}}.\n{}",
            shape.tools.iter().map(describe).collect::<Vec<_>>().join("\n")
        )),
        Steering::Free | Steering::Json(_) => None,
    }
}

/// `messages` with the forced call's instruction added to the system message (or as one first).
pub fn with_instruction(messages: &[ChatMessage], shape: &Shape, steering: &Steering) -> Vec<ChatMessage> {
    let mut out = messages.to_vec();
    if let Some(text) = instruction(shape, steering) {
        match out.first_mut() {
            Some(first) if first.role == Role::System => {
                first.content = format!("{}\n\n{text}", first.content)
            }
            _ => out.insert(0, ChatMessage::text(Role::System, text)),
        }
    }
    out
}

/// A fresh tool call id.
fn call_id() -> String {
    format!("call_{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// Where a JSON value being generated stands: whether it has closed. The constraint makes the
/// text valid JSON, but a model whose end-of-sequence token the constraint does not know can go
/// on generating nothing after the value until `max_tokens`: the engine stops it at the close
/// instead, so no client pays for tokens after its answer.
#[derive(Debug, Clone, Default)]
pub struct JsonEnd {
    depth: u32,
    started: bool,
    in_string: bool,
    escaped: bool,
    closed: bool,
}

impl JsonEnd {
    /// Follow more text; `true` once the top-level object or array has closed.
    pub fn feed(&mut self, text: &str) -> bool {
        for c in text.chars() {
            if self.closed {
                break;
            }
            if self.in_string {
                match (self.escaped, c) {
                    (true, _) => self.escaped = false,
                    (false, '\\') => self.escaped = true,
                    (false, '"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => self.in_string = true,
                '{' | '[' => {
                    self.depth += 1;
                    self.started = true;
                }
                '}' | ']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.closed = self.started && self.depth == 0;
                }
                _ => {}
            }
        }
        self.closed
    }
}

/// Turns the text generated under a forced call into tool-call events: a named call streams its
/// arguments as they are generated; a call of any tool is parsed once complete (its name comes
/// first in the JSON, and only the whole object says which schema it followed). Under any JSON
/// constraint it also says when the value has closed ([`CallStream::closed`]).
#[derive(Debug)]
pub struct CallStream {
    steering: Steering,
    id: String,
    started: bool,
    buffer: String,
    end: JsonEnd,
}

impl CallStream {
    /// A stream for `steering` (free or JSON steering passes text through).
    pub fn new(steering: Steering) -> Self {
        Self { steering, id: call_id(), started: false, buffer: String::new(), end: JsonEnd::default() }
    }

    /// Whether the constrained JSON value has closed (never, for free text).
    pub fn closed(&self) -> bool {
        self.steering.schema().is_some() && self.end.closed
    }

    /// Whether generated text becomes a tool call.
    pub fn is_call(&self) -> bool {
        matches!(self.steering, Steering::Call { .. } | Steering::AnyCall(_))
    }

    /// The events for one step's `event` (text under a forced call becomes call pieces).
    pub fn step(&mut self, event: Event) -> Vec<Event> {
        let Event::Text { text, .. } = &event else { return vec![event] };
        self.end.feed(text);
        match &self.steering {
            Steering::Free | Steering::Json(_) => vec![event],
            Steering::Call { name, .. } => {
                let (id, name) = if self.started {
                    (String::new(), String::new())
                } else {
                    (self.id.clone(), name.clone())
                };
                self.started = true;
                vec![Event::ToolCall(ToolCallDelta { index: 0, id, name, arguments: text.clone() })]
            }
            Steering::AnyCall(_) => {
                self.buffer.push_str(text);
                Vec::new()
            }
        }
    }

    /// The events left at the end, and whether the answer was a tool call.
    pub fn finish(&mut self) -> (Vec<Event>, bool) {
        match &self.steering {
            Steering::Free | Steering::Json(_) => (Vec::new(), false),
            Steering::Call { .. } => (Vec::new(), self.started),
            Steering::AnyCall(_) => {
                let text = std::mem::take(&mut self.buffer);
                let parsed = serde_json::from_str::<Value>(&text).ok().and_then(|v| {
                    let name = v.get("name")?.as_str()?.to_owned();
                    Some((name, v.get("arguments")?.to_string()))
                });
                match parsed {
                    Some((name, arguments)) => {
                        let call = ToolCallDelta { index: 0, id: self.id.clone(), name, arguments };
                        (vec![Event::ToolCall(call)], true)
                    }
                    // Cut off before the object closed: the text as generated.
                    None if text.is_empty() => (Vec::new(), false),
                    None => (vec![Event::Text { text, logprob: None }], false),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, parameters: &str) -> ToolSpec {
        ToolSpec { name: name.into(), description: format!("does {name}"), parameters: parameters.into() }
    }

    fn text(t: &str) -> Event {
        Event::Text { text: t.into(), logprob: None }
    }

    #[test]
    fn a_named_call_streams_its_arguments_with_id_and_name_first() {
        let shape = Shape {
            tools: vec![tool("a", r#"{"type":"object"}"#), tool("b", "{}")],
            tool_choice: ToolChoice::Named("b".into()),
            ..Shape::default()
        };
        let steering = steering(&shape).unwrap();
        assert!(matches!(&steering, Steering::Call { name, .. } if name == "b"));
        let mut calls = CallStream::new(steering);
        let events: Vec<Event> = ["{\"x\"", ":1}"].into_iter().flat_map(|t| calls.step(text(t))).collect();
        let [Event::ToolCall(first), Event::ToolCall(second)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert!(first.id.starts_with("call_") && first.name == "b" && first.arguments == "{\"x\"");
        assert!(second.id.is_empty() && second.name.is_empty() && second.arguments == ":1}");
        assert_eq!(calls.finish(), (vec![], true));
    }

    #[test]
    fn a_required_call_of_several_tools_is_parsed_when_complete() {
        let shape = Shape {
            tools: vec![tool("a", "{}"), tool("b", "{}")],
            tool_choice: ToolChoice::Required,
            ..Shape::default()
        };
        let mut calls = CallStream::new(steering(&shape).unwrap());
        assert!(calls.step(text(r#"{"name":"b","#)).is_empty());
        assert!(calls.step(text(r#""arguments":{"k":[1]}}"#)).is_empty());
        let (events, called) = calls.finish();
        let [Event::ToolCall(call)] = events.as_slice() else { panic!("{events:?}") };
        assert!(called && call.name == "b" && call.arguments == r#"{"k":[1]}"#);
    }

    #[test]
    fn the_end_of_a_json_value_is_found_outside_strings() {
        let mut end = JsonEnd::default();
        assert!(!end.feed(r#"{"a":"}]\"{","#));
        assert!(!end.feed(r#""b":[1,{"c":2}]"#));
        assert!(end.feed("} trailing"));
        let mut not_json = JsonEnd::default();
        assert!(!not_json.feed("no brackets at all }"));
    }

    #[test]
    fn bad_shapes_are_refused_with_the_reason() {
        let named = |n: &str| Shape {
            tools: vec![tool("a", "{}")],
            tool_choice: ToolChoice::Named(n.into()),
            ..Shape::default()
        };
        assert!(steering(&named("zz")).unwrap_err().contains("not among the tools"));
        let broken =
            Shape { tools: vec![tool("a", "{nope")], tool_choice: ToolChoice::Required, ..Shape::default() };
        assert!(steering(&broken).unwrap_err().contains("not valid JSON"));
        let format = Shape { format: ResponseFormat::JsonSchema("[1]".into()), ..Shape::default() };
        assert!(steering(&format).unwrap_err().contains("JSON Schema object"));
        assert_eq!(steering(&Shape::default()).unwrap(), Steering::Free);
    }

    #[test]
    fn the_instruction_joins_an_existing_system_message() {
        let shape =
            Shape { tools: vec![tool("a", "{}")], tool_choice: ToolChoice::Required, ..Shape::default() };
        let s = steering(&shape).unwrap();
        let with = with_instruction(
            &[ChatMessage::text(Role::System, "be brief"), ChatMessage::text(Role::User, "hi")],
            &shape,
            &s,
        );
        assert_eq!(with.len(), 2);
        assert!(with[0].content.starts_with("be brief\n\nCall the function a."));
        let without = with_instruction(&[ChatMessage::text(Role::User, "hi")], &shape, &s);
        assert_eq!((without.len(), without[0].role), (2, Role::System));
    }
}
