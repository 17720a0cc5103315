//! Spark SQL's way of naming a window, made DataFusion SQL.
//!
//! In Spark, `GROUP BY window(timestamp, '5 minutes')` makes a column called `window`,
//! so a query selects `window`, `window.start` or `window.end`. DataFusion has no such
//! column. Before planning, in every `SELECT` whose `GROUP BY` holds a window call
//! (and which does not name something `window` itself), this rewrites
//!
//! * `window` → the window call (selected as `window`),
//! * `window.start` / `window.end` → `get_field(<the call>, 'start')` (selected as `start` / `end`),
//!
//! in the select list and `HAVING`. Text that does not parse is left alone, so that
//! DataFusion reports the syntax error itself.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, Ident, Query, Select, SelectItem, SetExpr, Statement, TableFactor, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::pipeline::windows::WINDOW_FUNCTIONS;

const WINDOW_COLUMN: &str = "window";

/// Rewrites Spark-style references to `window`; returns the text unchanged if there are none.
pub fn rewrite_window_references(sql: &str) -> String {
    let Ok(mut statements) = Parser::parse_sql(&GenericDialect {}, sql) else { return sql.to_string() };
    let mut changed = false;
    for statement in &mut statements {
        if let Statement::Query(query) = statement {
            changed |= rewrite_query(query);
        }
    }
    if !changed {
        return sql.to_string();
    }
    statements.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(";\n")
}

fn rewrite_query(query: &mut Query) -> bool {
    match query.body.as_mut() {
        SetExpr::Select(select) => rewrite_select(select),
        SetExpr::Query(inner) => rewrite_query(inner),
        _ => false,
    }
}

fn is_window_call(expr: &Expr) -> bool {
    matches!(expr, Expr::Function(f) if WINDOW_FUNCTIONS.iter().any(|w| f.name.to_string().eq_ignore_ascii_case(w)))
}

fn rewrite_select(select: &mut Select) -> bool {
    let mut changed = false;
    for table in &mut select.from {
        if let TableFactor::Derived { subquery, .. } = &mut table.relation {
            changed |= rewrite_query(subquery);
        }
    }
    let GroupByExpr::Expressions(groups, _) = &select.group_by else { return changed };
    let Some(call) = groups.iter().find(|g| is_window_call(g)).cloned() else { return changed };
    let names_window_itself = select.projection.iter().any(
        |item| matches!(item, SelectItem::ExprWithAlias { alias, .. } if alias.value.eq_ignore_ascii_case(WINDOW_COLUMN)),
    );
    if names_window_itself {
        return changed;
    }
    for item in &mut select.projection {
        match item {
            SelectItem::UnnamedExpr(expr) => {
                // Keep Spark's column names: `window`, `start`, `end`.
                let name = match &*expr {
                    Expr::Identifier(id) if id.value.eq_ignore_ascii_case(WINDOW_COLUMN) => Some(id.clone()),
                    Expr::CompoundIdentifier(parts) if is_window_field(parts) => Some(parts[1].clone()),
                    _ => None,
                };
                if replace(expr, &call) {
                    changed = true;
                    if let Some(alias) = name {
                        *item = SelectItem::ExprWithAlias { expr: expr.clone(), alias };
                    }
                }
            }
            SelectItem::ExprWithAlias { expr, .. } => changed |= replace(expr, &call),
            _ => {}
        }
    }
    if let Some(having) = &mut select.having {
        changed |= replace(having, &call);
    }
    changed
}

fn is_window_field(parts: &[Ident]) -> bool {
    parts.len() == 2 && parts[0].value.eq_ignore_ascii_case(WINDOW_COLUMN)
}

/// Replaces `window` and `window.<field>` inside `expr` by `call`; whether it did.
fn replace(expr: &mut Expr, call: &Expr) -> bool {
    let mut changed = false;
    let _ = visit_expressions_mut(expr, |e| {
        match e {
            Expr::Identifier(id) if id.value.eq_ignore_ascii_case(WINDOW_COLUMN) => {
                *e = call.clone();
                changed = true;
            }
            Expr::CompoundIdentifier(parts) if is_window_field(parts) => {
                let field = parts[1].value.replace('\'', "''");
                let text = format!("get_field({call}, '{field}')");
                if let Ok(parsed) = Parser::new(&GenericDialect {}).try_with_sql(&text).and_then(|mut p| p.parse_expr())
                {
                    *e = parsed;
                    changed = true;
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spark_window_columns_become_the_window_call() {
        let sql = "SELECT window.start, window.end, window, user_id, COUNT(*) AS n FROM SOURCE \
                   GROUP BY window(timestamp, '5 minutes'), user_id HAVING window.start IS NOT NULL";
        let out = rewrite_window_references(sql);
        assert!(out.contains("get_field(window(timestamp, '5 minutes'), 'start') AS start"), "{out}");
        assert!(out.contains("get_field(window(timestamp, '5 minutes'), 'end') AS end"), "{out}");
        assert!(out.contains("window(timestamp, '5 minutes') AS window,"), "{out}");
        assert!(out.contains("HAVING get_field(window(timestamp, '5 minutes'), 'start') IS NOT NULL"), "{out}");
    }

    #[test]
    fn queries_that_name_their_window_or_do_not_parse_are_left_alone() {
        let named = "SELECT window(timestamp, '5 minutes') AS window, COUNT(*) FROM SOURCE GROUP BY window(timestamp, '5 minutes')";
        assert_eq!(rewrite_window_references(named), named);
        assert_eq!(rewrite_window_references("SELEC oops"), "SELEC oops");
    }
}
