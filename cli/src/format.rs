//! Output of listings: docker's aligned tables (Go's tabwriter with minwidth 10, padding
//! 3) and the `--format` flag (`table …`, `json`, or a Go template per row).

use serde_json::{Map, Value};

use crate::error::{CliError, Result};
use crate::template::Template;

/// How a listing is printed, decided by `--format`.
pub enum ListFormat {
    /// A header row derived from the template, then aligned rows.
    Table(Template),
    /// One rendered template per line, no header.
    Raw(Template),
    /// One JSON object per line.
    Json,
}

impl ListFormat {
    /// `format` as given by the user (or `None` for the command's default table).
    pub fn parse(format: Option<&str>, default_table: &str) -> Result<ListFormat> {
        let format = format.unwrap_or(default_table);
        let format = if format.is_empty() || format == "table" {
            default_table
        } else {
            format
        };
        if format == "json" {
            return Ok(ListFormat::Json);
        }
        let (is_table, body) = match format.strip_prefix("table") {
            Some(rest) => (true, rest),
            None => (false, format),
        };
        let template =
            Template::parse(&unescape_format(body.trim_matches(' '))).map_err(CliError::Usage)?;
        Ok(if is_table {
            ListFormat::Table(template)
        } else {
            ListFormat::Raw(template)
        })
    }

    /// Renders `rows` (docker's per-row context objects); `headers` names the columns of
    /// known fields, e.g. ("ID", "CONTAINER ID").
    pub fn render(&self, rows: &[Value], headers: &[(&str, &str)]) -> Result<String> {
        match self {
            ListFormat::Json => {
                let mut out = String::new();
                for row in rows {
                    out.push_str(&row.to_string());
                    out.push('\n');
                }
                Ok(out)
            }
            ListFormat::Raw(template) => {
                let mut out = String::new();
                for row in rows {
                    out.push_str(&template.render(row).map_err(CliError::Usage)?);
                    out.push('\n');
                }
                Ok(out)
            }
            ListFormat::Table(template) => {
                let header = header_context(rows.first(), headers);
                let mut text = template.render(&header).map_err(CliError::Usage)?;
                text.push('\n');
                for row in rows {
                    text.push_str(&template.render(row).map_err(CliError::Usage)?);
                    text.push('\n');
                }
                Ok(tabwrite(&text, 10, 3))
            }
        }
    }
}

/// Lets users write `\t` and `\n` in a shell argument, as the docker CLI allows.
fn unescape_format(format: &str) -> String {
    format.replace("\\t", "\t").replace("\\n", "\n")
}

/// An object whose fields render as column headers: known names from `headers`, others
/// as the field name in capitals.
fn header_context(sample: Option<&Value>, headers: &[(&str, &str)]) -> Value {
    let mut map = Map::new();
    if let Some(Value::Object(fields)) = sample {
        for key in fields.keys() {
            map.insert(key.clone(), Value::String(key.to_uppercase()));
        }
    }
    for (field, header) in headers {
        map.insert((*field).to_string(), Value::String((*header).to_string()));
    }
    Value::Object(map)
}

/// Go's text/tabwriter (no flags, space padding): tab-terminated cells are aligned in
/// column blocks of consecutive lines; the last cell of a line is not padded.
pub fn tabwrite(text: &str, min_width: usize, padding: usize) -> String {
    let lines: Vec<Vec<&str>> = text
        .split_terminator('\n')
        .map(|line| line.split('\t').collect())
        .collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut widths = Vec::new();
    format_block(
        &lines,
        0,
        lines.len(),
        &mut widths,
        min_width,
        padding,
        &mut out,
    );
    out
}

fn format_block(
    lines: &[Vec<&str>],
    mut start: usize,
    end: usize,
    widths: &mut Vec<usize>,
    min_width: usize,
    padding: usize,
    out: &mut String,
) {
    let column = widths.len();
    let mut this = start;
    while this < end {
        // Cells before the last are tab-terminated; only those take part in alignment.
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, start, this, widths, out);
        start = this;
        let mut width = min_width;
        while this < end && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].chars().count() + padding);
            this += 1;
        }
        widths.push(width);
        format_block(lines, start, this, widths, min_width, padding, out);
        widths.pop();
        start = this;
    }
    write_lines(lines, start, end, widths, out);
}

fn write_lines(lines: &[Vec<&str>], start: usize, end: usize, widths: &[usize], out: &mut String) {
    for line in &lines[start..end] {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if j + 1 < line.len() {
                if let Some(width) = widths.get(j) {
                    let used = cell.chars().count();
                    out.extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
                }
            }
        }
        out.push('\n');
    }
}

/// Docker's `stringid.TruncateID`: strips `sha256:` and keeps 12 characters.
pub fn short_id(id: &str) -> String {
    let id = id.split_once(':').map(|(_, hex)| hex).unwrap_or(id);
    id.chars().take(12).collect()
}

/// Docker's `Ellipsis`: cut to `max` characters, the last one being `…`.
pub fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tabwriter_aligns_like_go() {
        let text = "CONTAINER ID\tIMAGE\tNAMES\nabc\tbusybox\tweb\nabcdef012345\tx\tdb\n";
        let expected = "CONTAINER ID   IMAGE     NAMES\n\
                        abc            busybox   web\n\
                        abcdef012345   x         db\n";
        assert_eq!(tabwrite(text, 10, 3), expected);
    }

    #[test]
    fn tabwriter_column_blocks_break_on_lines_without_that_cell() {
        let text = "a\tb\nlonglonglonglong\nc\td\n";
        assert_eq!(tabwrite(text, 1, 1), "a b\nlonglonglonglong\nc d\n");
    }

    #[test]
    fn table_format_with_headers() {
        let rows = vec![
            json!({"ID": "0123456789ab", "Image": "busybox", "Names": "web"}),
            json!({"ID": "ba9876543210", "Image": "debian:bookworm", "Names": "db"}),
        ];
        let format = ListFormat::parse(Some(r"table {{.ID}}\t{{.Image}}"), "").expect("valid");
        let out = format
            .render(&rows, &[("ID", "CONTAINER ID")])
            .expect("renders");
        assert_eq!(
            out,
            "CONTAINER ID   IMAGE\n0123456789ab   busybox\nba9876543210   debian:bookworm\n"
        );
    }

    #[test]
    fn raw_and_json_formats() {
        let rows = vec![
            json!({"ID": "a", "Names": "x"}),
            json!({"ID": "b", "Names": "y"}),
        ];
        let raw = ListFormat::parse(Some("{{.ID}}:{{.Names}}"), "").expect("valid");
        assert_eq!(raw.render(&rows, &[]).expect("renders"), "a:x\nb:y\n");
        let json = ListFormat::parse(Some("json"), "").expect("valid");
        assert_eq!(
            json.render(&rows, &[]).expect("renders"),
            "{\"ID\":\"a\",\"Names\":\"x\"}\n{\"ID\":\"b\",\"Names\":\"y\"}\n"
        );
        let each = ListFormat::parse(Some("{{json .}}"), "").expect("valid");
        assert_eq!(
            each.render(&rows[..1], &[]).expect("renders"),
            "{\"ID\":\"a\",\"Names\":\"x\"}\n"
        );
    }

    #[test]
    fn ids_and_ellipsis() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(
            ellipsis("sleep 1000000000000000", 20),
            "sleep 1000000000000…"
        );
        assert_eq!(ellipsis("ls", 20), "ls");
    }
}
