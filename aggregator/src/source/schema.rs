//! The source schema: declared once, in a file holding one SQL `CREATE TABLE`.
//!
//! Column names and types come from the declaration (nested JSON objects are STRUCT
//! columns); `NOT NULL` columns are required. Top-level TIMESTAMP columns are held as
//! microseconds, UTC. The event-time column is the first TIMESTAMP column, unless a
//! comment line `-- event_time: <column>` names another.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};

/// The default declaration: user interactions (see `schemas/interactions.sql`).
pub const DEFAULT_SCHEMA_SQL: &str = include_str!("../../../schemas/interactions.sql");

/// The timestamp type of top-level TIMESTAMP columns of a source.
pub const EVENT_TIME_TYPE: DataType = DataType::Timestamp(TimeUnit::Microsecond, None);

#[derive(Debug, Clone)]
pub struct SourceSchema {
    /// Where the declaration came from (a file path, or "built-in").
    pub origin: String,
    pub schema: SchemaRef,
    /// Index of the event-time column, if the source has a TIMESTAMP column.
    pub event_time: Option<usize>,
}

impl SourceSchema {
    /// Reads a declaration from a file.
    pub async fn from_file(path: &std::path::Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::user(format!("source schema {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string()).await
    }

    /// The built-in interactions declaration.
    pub async fn default_interactions() -> Result<Self> {
        Self::parse(DEFAULT_SCHEMA_SQL, "built-in interactions schema").await
    }

    /// Parses one `CREATE TABLE` statement with DataFusion's SQL front end.
    pub async fn parse(sql: &str, origin: &str) -> Result<Self> {
        let fail = |msg: String| Error::user(format!("source schema {origin}: {msg}"));
        let ctx = SessionContext::new();
        let plan = ctx.state().create_logical_plan(sql).await.map_err(|e| fail(e.to_string()))?;
        let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) = plan else {
            return Err(fail("expected one CREATE TABLE statement".into()));
        };
        let declared = create.input.schema().as_arrow().clone();
        let fields: Vec<Field> = declared
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Timestamp(_, _) => f.as_ref().clone().with_data_type(EVENT_TIME_TYPE),
                _ => f.as_ref().clone(),
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let chosen = sql.lines().find_map(|line| {
            let rest = line.trim().strip_prefix("--")?.trim().strip_prefix("event_time")?;
            Some(rest.trim_start().strip_prefix(':')?.trim().to_string())
        });
        let event_time = match chosen {
            Some(name) => {
                let index =
                    schema.index_of(&name).map_err(|_| fail(format!("event_time column {name:?} is not declared")))?;
                if schema.field(index).data_type() != &EVENT_TIME_TYPE {
                    return Err(fail(format!("event_time column {name:?} must be a TIMESTAMP")));
                }
                Some(index)
            }
            None => schema.fields().iter().position(|f| f.data_type() == &EVENT_TIME_TYPE),
        };
        Ok(SourceSchema { origin: origin.to_string(), schema, event_time })
    }

    pub fn event_time_name(&self) -> Option<&str> {
        self.event_time.map(|i| self.schema.field(i).name().as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_default_declaration_has_the_interaction_columns_and_event_time() {
        let s = SourceSchema::default_interactions().await.unwrap();
        let names: Vec<&str> = s.schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["user_id", "item_id", "interaction_type", "timestamp"]);
        assert_eq!(s.event_time_name(), Some("timestamp"));
        assert!(!s.schema.field(0).is_nullable(), "NOT NULL must make the column required");
    }

    #[tokio::test]
    async fn nested_objects_are_struct_columns_and_event_time_can_be_chosen() {
        let sql = "-- event_time: seen_at\n\
                   CREATE TABLE t (created TIMESTAMP, seen_at TIMESTAMP, \"user\" STRUCT<id BIGINT, name VARCHAR>)";
        let s = SourceSchema::parse(sql, "t.sql").await.unwrap();
        assert_eq!(s.event_time_name(), Some("seen_at"));
        assert!(matches!(s.schema.field(2).data_type(), DataType::Struct(f) if f.len() == 2));
    }

    #[tokio::test]
    async fn a_broken_declaration_names_its_file() {
        let err = SourceSchema::parse("CREATE TABLE t (a BIGINT", "schemas/x.sql").await.unwrap_err();
        assert!(err.to_string().contains("schemas/x.sql"), "{err}");
    }
}
