//! Just enough XML-RPC to talk to supervisord: encoding a call with string,
//! int and boolean parameters, and decoding the `methodResponse` documents
//! that Python's `xmlrpc.client.dumps` produces.

use std::collections::BTreeMap;

/// One XML-RPC value, limited to the types supervisord sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    String(String),
    Int(i64),
    Bool(bool),
    Array(Vec<Value>),
    Struct(BTreeMap<String, Value>),
}

/// A decoded `methodResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response {
    Value(Value),
    Fault { code: i32, message: String },
}

/// Encodes a `methodCall` document.
pub(crate) fn encode_call(method: &str, params: &[Value]) -> String {
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<methodCall><methodName>");
    escape_into(&mut xml, method);
    xml.push_str("</methodName><params>");
    for param in params {
        xml.push_str("<param>");
        encode_value(&mut xml, param);
        xml.push_str("</param>");
    }
    xml.push_str("</params></methodCall>\n");
    xml
}

fn encode_value(xml: &mut String, value: &Value) {
    xml.push_str("<value>");
    match value {
        Value::String(s) => {
            xml.push_str("<string>");
            escape_into(xml, s);
            xml.push_str("</string>");
        }
        Value::Int(i) => xml.push_str(&format!("<int>{i}</int>")),
        Value::Bool(b) => xml.push_str(if *b {
            "<boolean>1</boolean>"
        } else {
            "<boolean>0</boolean>"
        }),
        Value::Array(items) => {
            xml.push_str("<array><data>");
            for item in items {
                encode_value(xml, item);
            }
            xml.push_str("</data></array>");
        }
        Value::Struct(members) => {
            xml.push_str("<struct>");
            for (name, member) in members {
                xml.push_str("<member><name>");
                escape_into(xml, name);
                xml.push_str("</name>");
                encode_value(xml, member);
                xml.push_str("</member>");
            }
            xml.push_str("</struct>");
        }
    }
    xml.push_str("</value>");
}

fn escape_into(xml: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => xml.push_str("&amp;"),
            '<' => xml.push_str("&lt;"),
            '>' => xml.push_str("&gt;"),
            _ => xml.push(c),
        }
    }
}

/// Decodes a `methodResponse` document; the error is a human-readable detail.
pub(crate) fn decode_response(xml: &str) -> Result<Response, String> {
    let root = parse_document(xml)?;
    if root.name != "methodResponse" {
        return Err(format!("expected <methodResponse>, found <{}>", root.name));
    }
    let [child] = root.children.as_slice() else {
        return Err("<methodResponse> must have exactly one child".into());
    };
    match child.name.as_str() {
        "params" => {
            let [param] = child.children.as_slice() else {
                return Err("<params> must hold exactly one <param>".into());
            };
            let value = single_child(param, "param", "value")?;
            Ok(Response::Value(decode_value(value)?))
        }
        "fault" => {
            let value = single_child(child, "fault", "value")?;
            let Value::Struct(mut members) = decode_value(value)? else {
                return Err("<fault> value is not a struct".into());
            };
            let code = match members.remove("faultCode") {
                Some(Value::Int(code)) => {
                    i32::try_from(code).map_err(|_| format!("faultCode {code} out of range"))?
                }
                _ => return Err("<fault> has no int faultCode".into()),
            };
            let message = match members.remove("faultString") {
                Some(Value::String(message)) => message,
                _ => return Err("<fault> has no string faultString".into()),
            };
            Ok(Response::Fault { code, message })
        }
        other => Err(format!("unexpected <{other}> in <methodResponse>")),
    }
}

fn single_child<'a>(
    parent: &'a Element,
    parent_name: &str,
    name: &str,
) -> Result<&'a Element, String> {
    match parent.children.as_slice() {
        [child] if child.name == name => Ok(child),
        _ => Err(format!("<{parent_name}> must hold exactly one <{name}>")),
    }
}

fn decode_value(value: &Element) -> Result<Value, String> {
    if value.name != "value" {
        return Err(format!("expected <value>, found <{}>", value.name));
    }
    let typed = match value.children.as_slice() {
        // An untyped <value> is a string.
        [] => return Ok(Value::String(value.text.clone())),
        [typed] => typed,
        _ => return Err("<value> has more than one child".into()),
    };
    match typed.name.as_str() {
        "string" => Ok(Value::String(typed.text.clone())),
        "int" | "i4" | "i8" => typed
            .text
            .trim()
            .parse()
            .map(Value::Int)
            .map_err(|_| format!("<{}> holds {:?}, not an integer", typed.name, typed.text)),
        "boolean" => match typed.text.trim() {
            "0" => Ok(Value::Bool(false)),
            "1" => Ok(Value::Bool(true)),
            other => Err(format!("<boolean> holds {other:?}, not 0 or 1")),
        },
        "array" => {
            let data = single_child(typed, "array", "data")?;
            data.children
                .iter()
                .map(decode_value)
                .collect::<Result<_, _>>()
                .map(Value::Array)
        }
        "struct" => {
            let mut members = BTreeMap::new();
            for member in &typed.children {
                if member.name != "member" {
                    return Err(format!("unexpected <{}> in <struct>", member.name));
                }
                let (Some(name), Some(value)) = (
                    member.children.iter().find(|c| c.name == "name"),
                    member.children.iter().find(|c| c.name == "value"),
                ) else {
                    return Err("<member> needs a <name> and a <value>".into());
                };
                members.insert(name.text.clone(), decode_value(value)?);
            }
            Ok(Value::Struct(members))
        }
        other => Err(format!("unsupported value type <{other}>")),
    }
}

/// An XML element with attributes dropped; `text` is all its direct
/// character data, entity-decoded.
#[derive(Debug, Default)]
struct Element {
    name: String,
    children: Vec<Element>,
    text: String,
}

fn parse_document(xml: &str) -> Result<Element, String> {
    let mut parser = Parser { rest: xml };
    parser.skip_misc()?;
    let root = parser.element()?;
    parser.skip_misc()?;
    if !parser.rest.is_empty() {
        return Err("trailing data after the root element".into());
    }
    Ok(root)
}

struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    /// Skips whitespace, the XML declaration, processing instructions and
    /// comments between elements.
    fn skip_misc(&mut self) -> Result<(), String> {
        loop {
            self.rest = self.rest.trim_start();
            if self.rest.starts_with("<?") {
                self.skip_past("?>")?;
            } else if self.rest.starts_with("<!--") {
                self.skip_past("-->")?;
            } else {
                return Ok(());
            }
        }
    }

    fn skip_past(&mut self, end: &str) -> Result<(), String> {
        let at = self
            .rest
            .find(end)
            .ok_or_else(|| format!("unterminated markup, missing {end:?}"))?;
        self.rest = &self.rest[at + end.len()..];
        Ok(())
    }

    fn element(&mut self) -> Result<Element, String> {
        let Some(tag_body) = self.rest.strip_prefix('<') else {
            return Err("expected an element".into());
        };
        let close = tag_body.find('>').ok_or("unterminated start tag")?;
        let tag = &tag_body[..close];
        self.rest = &tag_body[close + 1..];
        let (tag, self_closing) = match tag.strip_suffix('/') {
            Some(tag) => (tag, true),
            None => (tag, false),
        };
        let name = tag.split_whitespace().next().unwrap_or_default();
        if name.is_empty() {
            return Err("empty tag name".into());
        }
        let mut element = Element {
            name: name.to_owned(),
            ..Element::default()
        };
        if self_closing {
            return Ok(element);
        }
        loop {
            let next_markup = self
                .rest
                .find('<')
                .ok_or_else(|| format!("<{name}> is never closed"))?;
            element.text.push_str(&unescape(&self.rest[..next_markup])?);
            self.rest = &self.rest[next_markup..];
            if let Some(after) = self.rest.strip_prefix("</") {
                let close = after.find('>').ok_or("unterminated end tag")?;
                let end_name = after[..close].trim_end();
                if end_name != name {
                    return Err(format!("<{name}> closed by </{end_name}>"));
                }
                self.rest = &after[close + 1..];
                return Ok(element);
            } else if self.rest.starts_with("<!--") || self.rest.starts_with("<?") {
                self.skip_misc()?;
            } else {
                element.children.push(self.element()?);
            }
        }
    }
}

/// Decodes the five predefined entities and numeric character references.
fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';').ok_or("'&' without a closing ';'")?;
        let entity = &after[..semi];
        let decoded = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code =
                    if let Some(hex) = entity.strip_prefix("#x").or(entity.strip_prefix("#X")) {
                        u32::from_str_radix(hex, 16).ok()
                    } else if let Some(decimal) = entity.strip_prefix('#') {
                        decimal.parse().ok()
                    } else {
                        None
                    };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{entity};"))?
            }
        };
        out.push(decoded);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Value {
        Value::String(s.to_owned())
    }

    #[test]
    fn encodes_call_with_escaped_strings_and_booleans() {
        let xml = encode_call(
            "supervisor.startProcess",
            &[string("a<b>&c"), Value::Bool(true), Value::Int(-3)],
        );
        assert_eq!(
            xml,
            "<?xml version=\"1.0\"?>\n<methodCall><methodName>supervisor.startProcess</methodName>\
             <params><param><value><string>a&lt;b&gt;&amp;c</string></value></param>\
             <param><value><boolean>1</boolean></value></param>\
             <param><value><int>-3</int></value></param></params></methodCall>\n"
        );
    }

    #[test]
    fn encodes_call_without_params() {
        assert_eq!(
            encode_call("supervisor.getState", &[]),
            "<?xml version=\"1.0\"?>\n<methodCall><methodName>supervisor.getState</methodName>\
             <params></params></methodCall>\n"
        );
    }

    #[test]
    fn encoded_arrays_and_structs_decode_back() {
        let value = Value::Array(vec![
            Value::Struct(BTreeMap::from([("k".to_owned(), string("v&"))])),
            Value::Array(vec![]),
        ]);
        let mut xml = String::from("<methodResponse><params><param>");
        encode_value(&mut xml, &value);
        xml.push_str("</param></params></methodResponse>");
        assert_eq!(decode_response(&xml).unwrap(), Response::Value(value));
    }

    // Verbatim shape of Python's xmlrpc.client.dumps(methodresponse=True),
    // which supervisord uses.
    #[test]
    fn decodes_python_struct_response() {
        let xml = "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n\
                   <value><struct>\n<member>\n<name>statecode</name>\n<value><int>1</int></value>\n\
                   </member>\n<member>\n<name>statename</name>\n<value><string>RUNNING</string></value>\n\
                   </member>\n</struct></value>\n</param>\n</params>\n</methodResponse>\n";
        let expected = Value::Struct(BTreeMap::from([
            ("statecode".to_owned(), Value::Int(1)),
            ("statename".to_owned(), string("RUNNING")),
        ]));
        assert_eq!(decode_response(xml).unwrap(), Response::Value(expected));
    }

    #[test]
    fn decodes_nested_arrays_booleans_i4_and_untyped_strings() {
        let xml = "<?xml version='1.0'?><methodResponse><params><param><value><array><data>\n\
                   <value><array><data>\n<value><string>web</string></value>\n</data></array></value>\n\
                   <value><array><data>\n</data></array></value>\n\
                   <value><array><data/></array></value>\n\
                   <value><boolean>0</boolean></value>\n<value><i4> -7 </i4></value>\n\
                   <value>untyped &amp; raw</value>\n<value><string/></value>\n\
                   </data></array></value></param></params></methodResponse>";
        let expected = Value::Array(vec![
            Value::Array(vec![string("web")]),
            Value::Array(vec![]),
            Value::Array(vec![]),
            Value::Bool(false),
            Value::Int(-7),
            string("untyped & raw"),
            string(""),
        ]);
        assert_eq!(decode_response(xml).unwrap(), Response::Value(expected));
    }

    #[test]
    fn decodes_fault() {
        let xml = "<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n\
                   <member>\n<name>faultCode</name>\n<value><int>91</int></value>\n</member>\n\
                   <member>\n<name>faultString</name>\n<value><string>STILL_RUNNING: web</string></value>\n\
                   </member>\n</struct></value>\n</fault>\n</methodResponse>\n";
        assert_eq!(
            decode_response(xml).unwrap(),
            Response::Fault {
                code: 91,
                message: "STILL_RUNNING: web".into()
            }
        );
    }

    #[test]
    fn unescapes_named_and_numeric_entities() {
        let xml = "<methodResponse><params><param><value><string>&lt;a&gt; &amp; &quot;b&quot; \
                   &apos;c&apos; &#37; &#x41;&#233;</string></value></param></params></methodResponse>";
        assert_eq!(
            decode_response(xml).unwrap(),
            Response::Value(string("<a> & \"b\" 'c' % Aé"))
        );
    }

    #[test]
    fn rejects_malformed_documents() {
        for (xml, detail) in [
            ("", "expected an element"),
            ("<methodResponse><params>", "<params> is never closed"),
            ("<methodResponse></params>", "<methodResponse> closed by </params>"),
            ("<methodCall></methodCall>", "expected <methodResponse>, found <methodCall>"),
            (
                "<methodResponse><params><param><value><double>1.5</double></value></param></params></methodResponse>",
                "unsupported value type <double>",
            ),
            (
                "<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>",
                "<int> holds \"x\", not an integer",
            ),
            (
                "<methodResponse><params><param><value>&bogus;</value></param></params></methodResponse>",
                "unknown entity &bogus;",
            ),
            (
                "<methodResponse><fault><value><struct></struct></value></fault></methodResponse>",
                "<fault> has no int faultCode",
            ),
        ] {
            assert_eq!(decode_response(xml).unwrap_err(), detail, "{xml}");
        }
    }
}
