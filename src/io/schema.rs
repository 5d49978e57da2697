//! `docs/status.schema.json`, kept in step with the code: the counters of each object and the
//! drop reasons are written from their declarations ([`Counters::DEFS`], [`DropReason::ALL`]);
//! everything else in the file is written by hand. A test fails when the committed file differs
//! from what [`status_schema`] makes of it, and `BRAID_BLESS=1 cargo test -p braid schema`
//! rewrites it.

use serde_json::{Map, Value, json};

use crate::endpoint::edge::EdgeStats;
use crate::endpoint::gateway::GatewayStats;
use crate::monitor::StateReason;
use crate::stats::{Counters, DropReason, LinkStats, SessionStats};

/// Where the schema lives, from the repository's root.
pub const SCHEMA_PATH: &str = "docs/status.schema.json";

/// Marks a property written from a counter's declaration, so that a counter no longer declared
/// leaves the schema too.
const GENERATED: &str = "a counter: generated from its declaration in the engine";

/// `schema` with its counters, drop reasons and link state reasons rewritten from the code.
///
/// # Errors
/// A message naming the first part of `schema` that is not where the generator expects it.
pub fn status_schema(schema: &Value) -> Result<Value, String> {
    let mut schema = schema.clone();
    set_counters::<SessionStats>(&mut schema, "/$defs/session")?;
    set_counters::<LinkStats>(&mut schema, "/$defs/link")?;
    set_counters::<EdgeStats>(&mut schema, "/oneOf/0")?;
    set_counters::<GatewayStats>(&mut schema, "/oneOf/1")?;
    let reasons = schema
        .pointer_mut("/$defs/drops_by_reason/propertyNames/enum")
        .ok_or("the schema has no /$defs/drops_by_reason/propertyNames/enum")?;
    *reasons = DropReason::ALL.iter().map(|r| Value::from(r.as_str())).collect();
    let transitions = schema
        .pointer_mut("/$defs/transition/properties/reason/enum")
        .ok_or("the schema has no /$defs/transition/properties/reason/enum")?;
    *transitions = StateReason::ALL.iter().map(|r| Value::from(r.as_str())).collect();
    Ok(schema)
}

/// Writes the counters of `T` as required properties of the object schema at `pointer`.
fn set_counters<T: Counters>(schema: &mut Value, pointer: &str) -> Result<(), String> {
    let object = schema.pointer_mut(pointer).and_then(Value::as_object_mut).ok_or(format!("no object at {pointer}"))?;
    let properties = object
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(format!("{pointer}/properties is not an object"))?;
    let stale: Vec<String> = properties
        .iter()
        .filter(|(name, p)| {
            p.get("$comment").and_then(Value::as_str) == Some(GENERATED) && !T::DEFS.iter().any(|d| d.name == *name)
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in &stale {
        properties.shift_remove(name);
    }
    for def in T::DEFS {
        properties.insert(
            def.name.to_owned(),
            json!({ "$ref": "#/$defs/count", "description": def.help(), "$comment": GENERATED }),
        );
    }
    let required = object
        .entry("required")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or(format!("{pointer}/required is not an array"))?;
    required.retain(|r| r.as_str().is_none_or(|name| !stale.iter().any(|s| s == name)));
    for def in T::DEFS {
        if !required.iter().any(|r| r == def.name) {
            required.push(Value::from(def.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED: &str = include_str!("../../docs/status.schema.json");

    #[test]
    fn the_committed_schema_is_what_the_code_declares() {
        let committed: Value = serde_json::from_str(COMMITTED).expect("docs/status.schema.json is JSON");
        let generated = status_schema(&committed).unwrap();
        let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        if std::env::var_os("BRAID_BLESS").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SCHEMA_PATH);
            std::fs::write(&path, &text).unwrap();
            return;
        }
        assert!(
            text == COMMITTED,
            "{SCHEMA_PATH} is not what the code declares (a counter or a drop reason was added, renamed or \
             removed): run `BRAID_BLESS=1 cargo test -p braid --lib schema` and commit the file"
        );
    }

    #[test]
    fn every_declared_counter_and_reason_is_in_the_schema_and_nothing_stale_stays() {
        let committed: Value = serde_json::from_str(COMMITTED).unwrap();
        let mut schema = status_schema(&committed).unwrap();
        let link = schema.pointer_mut("/$defs/link/properties").unwrap().as_object_mut().unwrap();
        link.insert("retired_counter".into(), json!({ "$ref": "#/$defs/count", "$comment": GENERATED }));
        let schema = status_schema(&schema).unwrap();
        let link = &schema["$defs"]["link"];
        assert!(link["properties"].get("retired_counter").is_none(), "a counter no longer declared leaves");
        for def in LinkStats::DEFS {
            assert_eq!(link["properties"][def.name]["$ref"], "#/$defs/count", "{}", def.name);
            assert!(link["required"].as_array().unwrap().iter().any(|r| r == def.name), "{} is required", def.name);
        }
        let reasons = schema.pointer("/$defs/drops_by_reason/propertyNames/enum").unwrap();
        assert_eq!(reasons.as_array().unwrap().len(), DropReason::ALL.len());
        assert!(reasons.as_array().unwrap().iter().any(|r| r == "over_capacity"));
    }

    crate::counters! {
        /// A set of counters declared only in this test.
        struct Declared {
            /// Widgets made.
            widgets,
        }
    }

    #[test]
    fn a_counter_declared_once_is_a_required_property_of_its_object() {
        let mut schema = json!({ "$defs": { "thing": { "properties": { "name": true }, "required": ["name"] } } });
        set_counters::<Declared>(&mut schema, "/$defs/thing").unwrap();
        let thing = &schema["$defs"]["thing"];
        assert_eq!(thing["properties"]["widgets"]["$ref"], "#/$defs/count");
        assert_eq!(thing["properties"]["widgets"]["description"], "Widgets made.");
        assert_eq!(thing["required"], json!(["name", "widgets"]));
        assert!(set_counters::<Declared>(&mut schema, "/$defs/missing").is_err(), "a missing object is named");
    }
}
