//! The subset of Go's text/template that `--format` is used with: fields by dotted path
//! (`{{.State.Status}}`), variables, pipelines, `if`/`else`/`range`/`with`, and the
//! docker CLI's functions (`json`, `join`, `upper`, `lower`, `title`, `split`, `truncate`,
//! `pad`, `println`) plus Go's `index`, `len`, `eq`, `ne`, `not`, `and`, `or`, `printf`.

use serde_json::Value;

/// A parsed template, ready to run against JSON values.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If {
        cond: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Range {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone)]
struct Pipeline {
    declared: Vec<String>,
    commands: Vec<Vec<Term>>,
}

#[derive(Debug, Clone)]
enum Term {
    /// `.A.B` relative to dot (empty path = dot itself).
    Field(Vec<String>),
    /// `$name.A.B`; `$` alone is the root.
    Variable(String, Vec<String>),
    Literal(Value),
    Function(String),
    Group(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Field(Vec<String>),
    Variable(String, Vec<String>),
    Literal(Value),
    Ident(String),
    Pipe,
    Open,
    Close(Vec<String>),
    Declare,
    Comma,
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, String> {
        let pieces = split_actions(source)?;
        let mut position = 0;
        let (nodes, end) = parse_nodes(&pieces, &mut position)?;
        match end {
            Some(keyword) => Err(format!("template: unexpected {{{{{keyword}}}}}")),
            None => Ok(Template { nodes }),
        }
    }

    pub fn render(&self, data: &Value) -> Result<String, String> {
        let mut out = String::new();
        let mut scope = Scope {
            vars: vec![("$".to_string(), data.clone())],
        };
        render_nodes(&self.nodes, Some(data), &mut scope, &mut out)?;
        Ok(out)
    }
}

enum Piece {
    Text(String),
    Action(String),
}

/// Splits the source into literal text and the insides of `{{ }}`, applying the `{{-` and
/// `-}}` whitespace trims.
fn split_actions(source: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = source;
    let mut trim_next_text = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next_text {
            text = text.trim_start();
        }
        let mut inner_start = start + 2;
        if rest[inner_start..].starts_with("- ") || rest[inner_start..].starts_with("-\t") {
            text = text.trim_end();
            inner_start += 1;
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text.to_string()));
        }
        let end = find_action_end(&rest[inner_start..])
            .ok_or_else(|| "template: unclosed action".to_string())?;
        let mut inner = &rest[inner_start..inner_start + end];
        trim_next_text = false;
        if inner.ends_with(" -") || inner.ends_with("\t-") {
            inner = &inner[..inner.len() - 1];
            trim_next_text = true;
        }
        let inner = inner.trim();
        if !inner.starts_with("/*") {
            pieces.push(Piece::Action(inner.to_string()));
        }
        rest = &rest[inner_start + end + 2..];
    }
    let text = if trim_next_text {
        rest.trim_start()
    } else {
        rest
    };
    if !text.is_empty() {
        pieces.push(Piece::Text(text.to_string()));
    }
    Ok(pieces)
}

/// Position of the `}}` closing an action, skipping those inside string literals.
fn find_action_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        match quote {
            Some(q) => {
                if bytes[i] == b'\\' && q == b'"' {
                    i += 1;
                } else if bytes[i] == q {
                    quote = None;
                }
            }
            None => {
                if bytes[i] == b'"' || bytes[i] == b'`' {
                    quote = Some(bytes[i]);
                } else if bytes[i..].starts_with(b"}}") {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}

/// Parses nodes until `{{end}}` or `{{else…}}`; returns the keyword that stopped it.
fn parse_nodes(
    pieces: &[Piece],
    position: &mut usize,
) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while *position < pieces.len() {
        let piece = &pieces[*position];
        *position += 1;
        let action = match piece {
            Piece::Text(text) => {
                nodes.push(Node::Text(text.clone()));
                continue;
            }
            Piece::Action(action) => action.as_str(),
        };
        let (keyword, rest) = split_keyword(action);
        match keyword {
            "end" => return Ok((nodes, Some("end".into()))),
            "else" => return Ok((nodes, Some(format!("else {rest}").trim_end().to_string()))),
            "if" | "range" | "with" => {
                let pipe = parse_pipeline(rest)?;
                let (body, otherwise) = parse_block(pieces, position, keyword)?;
                nodes.push(match keyword {
                    "if" => Node::If {
                        cond: pipe,
                        then: body,
                        otherwise,
                    },
                    "range" => Node::Range {
                        pipe,
                        body,
                        otherwise,
                    },
                    _ => Node::With {
                        pipe,
                        body,
                        otherwise,
                    },
                });
            }
            _ => nodes.push(Node::Action(parse_pipeline(action)?)),
        }
    }
    Ok((nodes, None))
}

/// The body of a block and its else branch (an `else if` becomes a nested `if`).
fn parse_block(
    pieces: &[Piece],
    position: &mut usize,
    keyword: &str,
) -> Result<(Vec<Node>, Vec<Node>), String> {
    let (body, end) = parse_nodes(pieces, position)?;
    match end.as_deref() {
        Some("end") => Ok((body, Vec::new())),
        Some("else") => {
            let (otherwise, end) = parse_nodes(pieces, position)?;
            if end.as_deref() != Some("end") {
                return Err(format!("template: {keyword} without matching end"));
            }
            Ok((body, otherwise))
        }
        Some(other) if other.starts_with("else if ") => {
            let cond = parse_pipeline(&other["else if ".len()..])?;
            let (then, otherwise) = parse_block(pieces, position, "if")?;
            Ok((
                body,
                vec![Node::If {
                    cond,
                    then,
                    otherwise,
                }],
            ))
        }
        _ => Err(format!("template: unexpected EOF: {keyword} without end")),
    }
}

fn split_keyword(action: &str) -> (&str, &str) {
    let end = action
        .find(|c: char| c.is_whitespace())
        .unwrap_or(action.len());
    let word = &action[..end];
    match word {
        "if" | "range" | "with" | "else" | "end" => (word, action[end..].trim()),
        _ => ("", action),
    }
}

fn parse_pipeline(text: &str) -> Result<Pipeline, String> {
    let tokens = tokenize(text)?;
    let mut position = 0;
    let pipeline = parse_tokens(&tokens, &mut position)?;
    if position != tokens.len() {
        return Err(format!("template: unexpected token in {text:?}"));
    }
    Ok(pipeline)
}

fn parse_tokens(tokens: &[Token], position: &mut usize) -> Result<Pipeline, String> {
    let mut declared = Vec::new();
    // Declarations: `$x :=` or `$k, $v :=`.
    let mut probe = *position;
    let mut names = Vec::new();
    while let Some(Token::Variable(name, path)) = tokens.get(probe) {
        if !path.is_empty() {
            break;
        }
        names.push(name.clone());
        probe += 1;
        match tokens.get(probe) {
            Some(Token::Comma) => probe += 1,
            Some(Token::Declare) => {
                declared = std::mem::take(&mut names);
                *position = probe + 1;
                break;
            }
            _ => break,
        }
    }
    let mut commands = Vec::new();
    let mut current = Vec::new();
    while let Some(token) = tokens.get(*position) {
        *position += 1;
        match token {
            Token::Pipe => {
                if current.is_empty() {
                    return Err("template: missing command before |".into());
                }
                commands.push(std::mem::take(&mut current));
            }
            Token::Close(_) => {
                *position -= 1;
                break;
            }
            Token::Open => {
                let inner = parse_tokens(tokens, position)?;
                match tokens.get(*position) {
                    Some(Token::Close(path)) => {
                        *position += 1;
                        current.push(Term::Group(Box::new(inner), path.clone()));
                    }
                    _ => return Err("template: unclosed (".into()),
                }
            }
            Token::Field(path) => current.push(Term::Field(path.clone())),
            Token::Variable(name, path) => current.push(Term::Variable(name.clone(), path.clone())),
            Token::Literal(value) => current.push(Term::Literal(value.clone())),
            Token::Ident(name) => current.push(Term::Function(name.clone())),
            Token::Declare | Token::Comma => return Err("template: unexpected := or ,".into()),
        }
    }
    if current.is_empty() {
        return Err("template: missing value for command".into());
    }
    commands.push(current);
    Ok(Pipeline { declared, commands })
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let read_path = |i: &mut usize| {
        let mut path = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            *i += 1;
            let start = *i;
            while *i < chars.len() && is_word(chars[*i]) {
                *i += 1;
            }
            if *i > start {
                path.push(chars[start..*i].iter().collect::<String>());
            }
        }
        path
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                i += 1;
                tokens.push(Token::Close(read_path(&mut i)));
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                tokens.push(Token::Declare);
                i += 2;
            }
            '=' => {
                tokens.push(Token::Declare);
                i += 1;
            }
            '.' => tokens.push(Token::Field(read_path(&mut i))),
            '$' => {
                i += 1;
                let start = i;
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
                let name = format!("${}", chars[start..i].iter().collect::<String>());
                tokens.push(Token::Variable(name, read_path(&mut i)));
            }
            '"' => {
                let mut value = String::new();
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err("template: unterminated quoted string".into());
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let escaped = chars.get(i).copied().unwrap_or('\\');
                            i += 1;
                            value.push(match escaped {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => other,
                            });
                        }
                        other => value.push(other),
                    }
                }
                tokens.push(Token::Literal(Value::String(value)));
            }
            '`' => {
                let start = i + 1;
                let end = chars[start..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or_else(|| "template: unterminated raw string".to_string())?;
                tokens.push(Token::Literal(Value::String(
                    chars[start..start + end].iter().collect(),
                )));
                i = start + end + 1;
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let value = if let Ok(n) = text.parse::<i64>() {
                    Value::from(n)
                } else {
                    text.parse::<f64>()
                        .map(Value::from)
                        .map_err(|_| format!("template: bad number {text}"))?
                };
                tokens.push(Token::Literal(value));
            }
            c if is_word(c) => {
                let start = i;
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                tokens.push(match word.as_str() {
                    "true" => Token::Literal(Value::Bool(true)),
                    "false" => Token::Literal(Value::Bool(false)),
                    "nil" => Token::Literal(Value::Null),
                    _ => Token::Ident(word),
                });
            }
            other => return Err(format!("template: unexpected {other:?} in action")),
        }
    }
    Ok(tokens)
}

struct Scope {
    vars: Vec<(String, Value)>,
}

impl Scope {
    fn get(&self, name: &str) -> Result<Value, String> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("template: undefined variable {name}"))
    }
}

fn render_nodes(
    nodes: &[Node],
    dot: Option<&Value>,
    scope: &mut Scope,
    out: &mut String,
) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Action(pipe) => {
                let value = eval_pipeline(pipe, dot, scope)?;
                if pipe.declared.is_empty() {
                    out.push_str(&display(value.as_ref()));
                } else if let Some(name) = pipe.declared.first() {
                    scope
                        .vars
                        .push((name.clone(), value.unwrap_or(Value::Null)));
                }
            }
            Node::If {
                cond,
                then,
                otherwise,
            } => {
                let value = eval_pipeline(cond, dot, scope)?;
                let branch = if truthy(value.as_ref()) {
                    then
                } else {
                    otherwise
                };
                let mark = scope.vars.len();
                render_nodes(branch, dot, scope, out)?;
                scope.vars.truncate(mark);
            }
            Node::With {
                pipe,
                body,
                otherwise,
            } => {
                let value = eval_pipeline(pipe, dot, scope)?;
                let mark = scope.vars.len();
                if truthy(value.as_ref()) {
                    render_nodes(body, value.as_ref(), scope, out)?;
                } else {
                    render_nodes(otherwise, dot, scope, out)?;
                }
                scope.vars.truncate(mark);
            }
            Node::Range {
                pipe,
                body,
                otherwise,
            } => {
                let value = eval_pipeline(pipe, dot, scope)?;
                let items: Vec<(Value, Value)> = match value {
                    Some(Value::Array(items)) => items
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (Value::from(i), v))
                        .collect(),
                    // serde_json's map is ordered by key, as Go ranges over maps.
                    Some(Value::Object(map)) => map
                        .into_iter()
                        .map(|(k, v)| (Value::String(k), v))
                        .collect(),
                    Some(Value::Null) | None => Vec::new(),
                    Some(other) => {
                        return Err(format!("template: range can't iterate over {other}"));
                    }
                };
                if items.is_empty() {
                    render_nodes(otherwise, dot, scope, out)?;
                    continue;
                }
                for (key, item) in items {
                    let mark = scope.vars.len();
                    match pipe.declared.as_slice() {
                        [value_name] => scope.vars.push((value_name.clone(), item.clone())),
                        [key_name, value_name, ..] => {
                            scope.vars.push((key_name.clone(), key));
                            scope.vars.push((value_name.clone(), item.clone()));
                        }
                        [] => {}
                    }
                    render_nodes(body, Some(&item), scope, out)?;
                    scope.vars.truncate(mark);
                }
            }
        }
    }
    Ok(())
}

fn eval_pipeline(
    pipe: &Pipeline,
    dot: Option<&Value>,
    scope: &Scope,
) -> Result<Option<Value>, String> {
    let mut piped: Option<Option<Value>> = None;
    for command in &pipe.commands {
        piped = Some(eval_command(command, dot, scope, piped)?);
    }
    Ok(piped.unwrap_or(None))
}

fn eval_command(
    command: &[Term],
    dot: Option<&Value>,
    scope: &Scope,
    piped: Option<Option<Value>>,
) -> Result<Option<Value>, String> {
    let Some(first) = command.first() else {
        return Ok(None);
    };
    if let Term::Function(name) = first {
        let mut args = Vec::new();
        for term in &command[1..] {
            args.push(eval_term(term, dot, scope)?);
        }
        if let Some(value) = piped {
            args.push(value);
        }
        return call_function(name, args);
    }
    if command.len() > 1 {
        return Err(format!(
            "template: can't give argument to non-function {first:?}"
        ));
    }
    eval_term(first, dot, scope)
}

fn eval_term(term: &Term, dot: Option<&Value>, scope: &Scope) -> Result<Option<Value>, String> {
    match term {
        Term::Field(path) => Ok(lookup(dot, path)),
        Term::Variable(name, path) => {
            let value = scope.get(name)?;
            Ok(lookup(Some(&value), path))
        }
        Term::Literal(value) => Ok(Some(value.clone())),
        Term::Function(name) => call_function(name, Vec::new()),
        Term::Group(pipe, path) => {
            let value = eval_pipeline(pipe, dot, scope)?;
            Ok(lookup(value.as_ref(), path))
        }
    }
}

fn lookup(value: Option<&Value>, path: &[String]) -> Option<Value> {
    let mut current = value?;
    for key in path {
        current = current.as_object()?.get(key)?;
    }
    Some(current.clone())
}

fn call_function(name: &str, args: Vec<Option<Value>>) -> Result<Option<Value>, String> {
    let arg = |i: usize| args.get(i).cloned().flatten().unwrap_or(Value::Null);
    let text = |i: usize| display(args.get(i).and_then(Option::as_ref));
    let need = |n: usize| {
        if args.len() < n {
            Err(format!(
                "template: wrong number of args for {name}: want {n} got {}",
                args.len()
            ))
        } else {
            Ok(())
        }
    };
    let string = |s: String| Ok(Some(Value::String(s)));
    match name {
        "json" => {
            need(1)?;
            string(serde_json::to_string(&arg(0)).map_err(|e| e.to_string())?)
        }
        "upper" => {
            need(1)?;
            string(text(0).to_uppercase())
        }
        "lower" => {
            need(1)?;
            string(text(0).to_lowercase())
        }
        "title" => {
            need(1)?;
            string(title_case(&text(0)))
        }
        "join" => {
            need(2)?;
            let items = match arg(0) {
                Value::Array(items) => items.iter().map(|v| display(Some(v))).collect::<Vec<_>>(),
                other => vec![display(Some(&other))],
            };
            string(items.join(&text(1)))
        }
        "split" => {
            need(2)?;
            let parts = text(0)
                .split(text(1).as_str())
                .map(|s| Value::String(s.to_string()))
                .collect();
            Ok(Some(Value::Array(parts)))
        }
        "truncate" => {
            need(2)?;
            let n = arg(1).as_u64().unwrap_or(0) as usize;
            string(text(0).chars().take(n).collect())
        }
        "pad" => {
            need(3)?;
            let left = arg(1).as_u64().unwrap_or(0) as usize;
            let right = arg(2).as_u64().unwrap_or(0) as usize;
            string(format!(
                "{}{}{}",
                " ".repeat(left),
                text(0),
                " ".repeat(right)
            ))
        }
        "println" => string(
            args.iter()
                .map(|a| display(a.as_ref()))
                .collect::<Vec<_>>()
                .join(" ")
                + "\n",
        ),
        "print" => string(args.iter().map(|a| display(a.as_ref())).collect::<String>()),
        "printf" => {
            need(1)?;
            string(printf(&text(0), &args[1..]))
        }
        "len" => {
            need(1)?;
            let len = match arg(0) {
                Value::Array(items) => items.len(),
                Value::Object(map) => map.len(),
                Value::String(s) => s.len(),
                other => return Err(format!("template: len of {other}")),
            };
            Ok(Some(Value::from(len)))
        }
        "index" => {
            need(1)?;
            let mut current = args.first().cloned().flatten();
            for key in args.iter().skip(1) {
                let key = key.clone().unwrap_or(Value::Null);
                current = match (current, &key) {
                    (Some(Value::Object(map)), Value::String(k)) => map.get(k).cloned(),
                    (Some(Value::Array(items)), Value::Number(n)) => {
                        n.as_u64().and_then(|i| items.get(i as usize).cloned())
                    }
                    (Some(Value::Null), _) | (None, _) => None,
                    (Some(other), _) => {
                        return Err(format!("template: can't index {other} with {key}"));
                    }
                };
            }
            Ok(current)
        }
        "eq" | "ne" => {
            need(2)?;
            let first = arg(0);
            let equal = args[1..]
                .iter()
                .any(|other| loosely_equal(&first, &other.clone().unwrap_or(Value::Null)));
            Ok(Some(Value::Bool(if name == "eq" { equal } else { !equal })))
        }
        "not" => {
            need(1)?;
            Ok(Some(Value::Bool(!truthy(args[0].as_ref()))))
        }
        "and" => {
            need(1)?;
            Ok(args
                .iter()
                .find(|a| !truthy(a.as_ref()))
                .or(args.last())
                .cloned()
                .flatten())
        }
        "or" => {
            need(1)?;
            Ok(args
                .iter()
                .find(|a| truthy(a.as_ref()))
                .or(args.last())
                .cloned()
                .flatten())
        }
        _ => Err(format!("template: function \"{name}\" not defined")),
    }
}

fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn title_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at_word_start = true;
    for c in text.chars() {
        if at_word_start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_word_start = c.is_whitespace() || c == '-' || c == '_';
    }
    out
}

/// `%s`, `%d`, `%v`, `%q` and `%%`; enough for format strings people put in `--format`.
fn printf(format: &str, args: &[Option<Value>]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('q') => out.push_str(&format!(
                "{:?}",
                display(args.next().and_then(Option::as_ref))
            )),
            Some(_) => out.push_str(&display(args.next().and_then(Option::as_ref))),
            None => out.push('%'),
        }
    }
    out
}

fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Object(map)) => !map.is_empty(),
    }
}

/// How Go prints a decoded JSON value with `{{.X}}`.
pub fn display(value: Option<&Value>) -> String {
    match value {
        None => "<no value>".to_string(),
        Some(Value::Null) => "<nil>".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(items)) => {
            format!(
                "[{}]",
                items
                    .iter()
                    .map(|v| display(Some(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
        Some(Value::Object(map)) => format!(
            "map[{}]",
            map.iter()
                .map(|(k, v)| format!("{k}:{}", display(Some(v))))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(source: &str, data: &Value) -> String {
        Template::parse(source)
            .expect("parses")
            .render(data)
            .expect("renders")
    }

    #[test]
    fn fields_and_dotted_paths() {
        let data = json!({"Id": "abc", "State": {"Status": "running", "Pid": 42}, "Name": "/web"});
        assert_eq!(render("{{.Id}}", &data), "abc");
        assert_eq!(
            render("{{.State.Status}} pid={{.State.Pid}}", &data),
            "running pid=42"
        );
        assert_eq!(render("{{.Missing}}", &data), "<no value>");
        assert_eq!(render("{{ .State.Missing.Deeper }}", &data), "<no value>");
    }

    #[test]
    fn json_function() {
        let data = json!({"Config": {"Env": ["A=1", "B=2"]}, "X": null});
        assert_eq!(render("{{json .Config.Env}}", &data), r#"["A=1","B=2"]"#);
        assert_eq!(
            render("{{json .}}", &json!({"b": 1, "a": "x"})),
            r#"{"a":"x","b":1}"#
        );
        assert_eq!(render("{{.X}}", &data), "<nil>");
    }

    #[test]
    fn functions_and_pipelines() {
        let data = json!({"Names": ["a", "b"], "Labels": {"com.x": "1"}, "Name": "web"});
        assert_eq!(render(r#"{{join .Names ","}}"#, &data), "a,b");
        assert_eq!(render(r#"{{index .Labels "com.x"}}"#, &data), "1");
        assert_eq!(render("{{.Name | upper}}", &data), "WEB");
        assert_eq!(render("{{len .Names}}", &data), "2");
        assert_eq!(render(r#"{{printf "%s-%d" .Name 3}}"#, &data), "web-3");
        assert_eq!(render(r#"{{title "hello world"}}"#, &data), "Hello World");
        assert_eq!(render(r#"{{truncate .Name 2}}"#, &data), "we");
    }

    #[test]
    fn control_flow() {
        let data = json!({
            "Running": true,
            "Mounts": [{"Source": "/a"}, {"Source": "/b"}],
            "Ports": {"80/tcp": [{"HostPort": "8080"}], "443/tcp": null}
        });
        assert_eq!(render("{{if .Running}}up{{else}}down{{end}}", &data), "up");
        assert_eq!(
            render("{{if .Nope}}up{{else if .Running}}maybe{{end}}", &data),
            "maybe"
        );
        assert_eq!(
            render("{{range .Mounts}}{{.Source}} {{end}}", &data),
            "/a /b "
        );
        assert_eq!(
            render(
                "{{range $p, $b := .Ports}}{{$p}}={{if $b}}{{(index $b 0).HostPort}}{{end}};{{end}}",
                &data
            ),
            "443/tcp=;80/tcp=8080;"
        );
        assert_eq!(render("{{with .Mounts}}{{len .}}{{end}}", &data), "2");
        assert_eq!(
            render("{{range .None}}x{{else}}empty{{end}}", &data),
            "empty"
        );
        assert_eq!(render("{{if eq .Running true}}yes{{end}}", &data), "yes");
        assert_eq!(render("a {{- \" b \" -}} c", &data), "a b c");
    }

    #[test]
    fn parse_errors_are_reported() {
        assert!(Template::parse("{{.A").is_err());
        assert!(Template::parse("{{if .A}}x").is_err());
        assert!(Template::parse("{{end}}").is_err());
        let bad = Template::parse("{{nosuchfunc .A}}").expect("parses");
        assert!(bad.render(&json!({})).is_err());
    }
}
