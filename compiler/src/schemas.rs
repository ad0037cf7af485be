//! `aigw schema`: the JSON Schemas of the input kinds and of the filter config, as committed
//! under `schemas/` (a test fails when that folder is stale).

use crate::validate::schema::AiKind;

/// `(file name, pretty JSON)` for every schema, in a fixed order.
pub fn all() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = AiKind::ALL
        .into_iter()
        .map(|kind| (format!("{}.json", kind.name()), pretty(&kind.schema())))
        .collect();
    out.push((
        "FilterConfig.json".into(),
        pretty(&aigw_filterconfig::json_schema()),
    ));
    out.push((
        "FilterConfigPart.json".into(),
        pretty(&aigw_filterconfig::part_json_schema()),
    ));
    out
}

fn pretty(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}
