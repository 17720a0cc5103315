//! Event-time windows as SQL functions, for use in `GROUP BY`.
//!
//! | call | window | value |
//! | --- | --- | --- |
//! | `window(ts, '5 minutes')`, `tumble(ts, '5 minutes')` | tumbling | struct `{start, end}` |
//! | `window(ts, '10 minutes', '5 minutes')`, `hop(ts, '10 minutes', '5 minutes')` | hopping (size, slide) | one row per window |
//!
//! Sizes are strings like `'5 minutes'` (Spark's form) or `INTERVAL` literals. Windows
//! are aligned to the Unix epoch, as in Spark. A hopping window puts an event into
//! several windows: the function returns a list and the [`ExpandHoppingWindows`]
//! analyzer rule turns the `GROUP BY` into `GROUP BY` over an `UNNEST` of it, so the
//! same SQL works in a batch query and in a pipeline.
//!
//! In a pipeline the source carries a hidden column `__watermark` (the watermark each
//! event saw, see `pipeline::watermark`); the rule passes it to the hopping function,
//! which then leaves out the windows that were already closed for that event.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, ListArray, StructArray, TimestampMicrosecondArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue, plan_err};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    Aggregate, ColumnarValue, Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, col,
};
use datafusion::optimizer::AnalyzerRule;

/// The hidden source column holding the watermark each event saw.
pub const WATERMARK_COLUMN: &str = "__watermark";

const TIME: DataType = DataType::Timestamp(TimeUnit::Microsecond, None);

/// `{start, end}`, the value of one window.
pub fn window_struct_fields() -> Fields {
    Fields::from(vec![Field::new("start", TIME, true), Field::new("end", TIME, true)])
}

fn window_struct_type() -> DataType {
    DataType::Struct(window_struct_fields())
}

fn window_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(window_struct_type(), true)))
}

/// The shape of a window, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    Tumbling { size: i64 },
    Hopping { size: i64, slide: i64 },
}

impl WindowSpec {
    /// The end of the last window that contains an event at `t`.
    pub fn last_end(&self, t: i64) -> i64 {
        match *self {
            WindowSpec::Tumbling { size } => t - t.rem_euclid(size) + size,
            WindowSpec::Hopping { size, slide } => t - t.rem_euclid(slide) + size,
        }
    }
}

/// The names a window function goes by.
pub const WINDOW_FUNCTIONS: [&str; 3] = ["window", "tumble", "hop"];

/// All our functions, to register in a session.
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(WindowFunction::new("window")),
        ScalarUDF::new_from_impl(WindowFunction::new("tumble")),
        ScalarUDF::new_from_impl(WindowFunction::new("hop")),
    ]
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowFunction {
    name: &'static str,
    signature: Signature,
}

impl WindowFunction {
    fn new(name: &'static str) -> Self {
        WindowFunction { name, signature: Signature::user_defined(Volatility::Immutable) }
    }

    /// Whether a call with `n` arguments is a hopping window.
    fn hopping(&self, n: usize) -> bool {
        self.name == "hop" || (self.name == "window" && n >= 3)
    }

    fn arity_error(&self) -> DataFusionError {
        DataFusionError::Plan(match self.name {
            "hop" => "hop(time, size, slide) takes a time column and two durations".into(),
            "tumble" => "tumble(time, size) takes a time column and a duration".into(),
            _ => "window(time, size [, slide]) takes a time column and one or two durations".into(),
        })
    }
}

/// Reads a duration argument: `'5 minutes'` or an `INTERVAL` literal, in microseconds.
pub fn duration_micros(value: &ScalarValue) -> DfResult<i64> {
    let micros = match value {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            crate::pipeline::definition::parse_duration(s).map_err(DataFusionError::Plan)?.as_micros() as i64
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            v.days as i64 * 86_400_000_000 + v.nanoseconds / 1000
        }
        ScalarValue::IntervalDayTime(Some(v)) => v.days as i64 * 86_400_000_000 + v.milliseconds as i64 * 1000,
        other => return plan_err!("a window size must be a duration like '5 minutes', not {other}"),
    };
    if micros <= 0 {
        return plan_err!("a window size must be positive, not {value}");
    }
    Ok(micros)
}

impl ScalarUDFImpl for WindowFunction {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        let max = if self.name == "tumble" { 2 } else { 4 };
        if arg_types.len() < 2 || arg_types.len() > max || (self.name == "hop" && arg_types.len() < 3) {
            return Err(self.arity_error());
        }
        Ok(arg_types.iter().enumerate().map(|(i, t)| if i == 0 || i == 3 { TIME } else { t.clone() }).collect())
    }
    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(if self.hopping(arg_types.len()) { window_list_type() } else { window_struct_type() })
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        for (i, scalar) in args.scalar_arguments.iter().enumerate().skip(1).take(2) {
            match scalar {
                Some(value) => {
                    duration_micros(value)?;
                }
                None => return plan_err!("argument {} of {} must be a constant duration", i + 1, self.name),
            }
        }
        let data_type = self.return_type(&args.arg_fields.iter().map(|f| f.data_type().clone()).collect::<Vec<_>>())?;
        Ok(Arc::new(Field::new(self.name, data_type, true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let duration = |i: usize| match &args.args[i] {
            ColumnarValue::Scalar(s) => duration_micros(s),
            ColumnarValue::Array(_) => plan_err!("window sizes must be constants"),
        };
        let times = args.args[0].to_array(n)?;
        let times = times.as_any().downcast_ref::<TimestampMicrosecondArray>().ok_or_else(|| {
            DataFusionError::Execution(format!("{}: expected a timestamp, got {}", self.name, times.data_type()))
        })?;
        if !self.hopping(args.args.len()) {
            let size = duration(1)?;
            let starts: TimestampMicrosecondArray = times.unary_opt(|t| Some(t - t.rem_euclid(size)));
            let ends: TimestampMicrosecondArray = starts.unary_opt(|s| s.checked_add(size));
            let array = StructArray::try_new(
                window_struct_fields(),
                vec![Arc::new(starts) as ArrayRef, Arc::new(ends)],
                times.nulls().cloned(),
            )?;
            return Ok(ColumnarValue::Array(Arc::new(array)));
        }
        let (size, slide) = (duration(1)?, duration(2)?);
        let watermarks = match args.args.get(3) {
            Some(w) => Some(w.to_array(n)?),
            None => None,
        };
        let watermarks = watermarks.as_ref().and_then(|w| w.as_any().downcast_ref::<TimestampMicrosecondArray>());
        let (mut starts, mut ends, mut offsets) = (Vec::new(), Vec::new(), Vec::with_capacity(n + 1));
        offsets.push(0i32);
        for row in 0..n {
            if times.is_valid(row) {
                let t = times.value(row);
                let closed_until = watermarks.filter(|w| w.is_valid(row)).map(|w| w.value(row));
                // Windows containing t start after t - size, at multiples of slide.
                let mut start = t - t.rem_euclid(slide);
                let mut these = Vec::new();
                while start > t - size {
                    if closed_until.is_none_or(|w| start + size > w) {
                        these.push(start);
                    }
                    start -= slide;
                }
                for s in these.into_iter().rev() {
                    starts.push(s);
                    ends.push(s + size);
                }
            }
            offsets.push(starts.len() as i32);
        }
        let windows = StructArray::try_new(
            window_struct_fields(),
            vec![
                Arc::new(TimestampMicrosecondArray::from(starts)) as ArrayRef,
                Arc::new(TimestampMicrosecondArray::from(ends)),
            ],
            None,
        )?;
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(window_struct_type(), true)),
            OffsetBuffer::new(offsets.into()),
            Arc::new(windows),
            None,
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

/// A window call in a `GROUP BY`, as written: its time column and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowCall {
    /// Position among the `GROUP BY` expressions.
    pub group_index: usize,
    pub time_column: String,
    pub spec: WindowSpec,
}

/// Reads a window call from a group expression, if it is one.
pub fn window_call(group_index: usize, expr: &Expr) -> DfResult<Option<WindowCall>> {
    let Expr::ScalarFunction(ScalarFunction { func, args }) = expr.clone().unalias_nested().data else {
        return Ok(None);
    };
    if !WINDOW_FUNCTIONS.contains(&func.name()) {
        return Ok(None);
    }
    let time_column = match args.first().map(|a| a.clone().unalias_nested().data) {
        Some(Expr::Column(c)) => c.name,
        Some(Expr::Cast(cast)) => match *cast.expr {
            Expr::Column(c) => c.name,
            other => return plan_err!("{}: the time argument must be a column, not {other}", func.name()),
        },
        other => return plan_err!("{}: the time argument must be a column, not {other:?}", func.name()),
    };
    let literal = |i: usize| match args.get(i).map(|a| a.clone().unalias_nested().data) {
        Some(Expr::Literal(value, _)) => duration_micros(&value),
        Some(Expr::Cast(cast)) => match *cast.expr {
            Expr::Literal(value, _) => duration_micros(&value),
            other => plan_err!("{}: window sizes must be constants, not {other}", func.name()),
        },
        other => plan_err!("{}: window sizes must be constants, not {other:?}", func.name()),
    };
    let hopping = func.name() == "hop" || (func.name() == "window" && args.len() >= 3);
    let spec = if hopping {
        WindowSpec::Hopping { size: literal(1)?, slide: literal(2)? }
    } else {
        WindowSpec::Tumbling { size: literal(1)? }
    };
    Ok(Some(WindowCall { group_index, time_column, spec }))
}

/// Rewrites `GROUP BY hop(...)` into `GROUP BY` over `UNNEST(hop(...))`: one row per
/// (event, window), as Spark's Expand does for sliding windows.
#[derive(Debug, Default)]
pub struct ExpandHoppingWindows;

impl AnalyzerRule for ExpandHoppingWindows {
    fn name(&self) -> &str {
        "expand_hopping_windows"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up(|node| {
            let LogicalPlan::Aggregate(agg) = &node else {
                // A child may have changed its output types (list → struct): re-derive.
                return Ok(Transformed::yes(node.recompute_schema()?));
            };
            let input_schema = agg.input.schema().clone();
            let mut hop = None;
            for (i, expr) in agg.group_expr.iter().enumerate() {
                let Expr::ScalarFunction(f) = expr.clone().unalias_nested().data else { continue };
                if WINDOW_FUNCTIONS.contains(&f.func.name())
                    && matches!(expr.get_type(&input_schema)?, DataType::List(_))
                {
                    if hop.is_some() {
                        return plan_err!("only one hopping window per GROUP BY");
                    }
                    hop = Some((i, f));
                }
            }
            let Some((index, mut call)) = hop else {
                return Ok(Transformed::yes(node.recompute_schema()?));
            };
            let original_name = agg.group_expr[index].schema_name().to_string();
            if call.args.len() == 3 && input_schema.has_column_with_unqualified_name(WATERMARK_COLUMN) {
                call.args.push(col(WATERMARK_COLUMN));
            }
            let expanded = "__window";
            let mut exprs: Vec<Expr> = input_schema.columns().into_iter().map(Expr::Column).collect();
            exprs.push(Expr::ScalarFunction(call).alias(expanded));
            let input = LogicalPlanBuilder::from(agg.input.as_ref().clone())
                .project(exprs)?
                .unnest_column(expanded)?
                .build()?;
            let mut group_expr = agg.group_expr.clone();
            group_expr[index] = col(expanded).alias(original_name);
            let aggregate = Aggregate::try_new(Arc::new(input), group_expr, agg.aggr_expr.clone())?;
            Ok(Transformed::yes(LogicalPlan::Aggregate(aggregate)))
        })
        .map(|t| t.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_and_hopping_windows_end_where_expected() {
        let min = 60_000_000;
        let t = 7 * min + 5;
        assert_eq!(WindowSpec::Tumbling { size: 5 * min }.last_end(t), 10 * min);
        assert_eq!(WindowSpec::Hopping { size: 10 * min, slide: 5 * min }.last_end(t), 15 * min);
    }

    #[test]
    fn durations_come_from_strings_and_intervals() {
        assert_eq!(duration_micros(&ScalarValue::from("5 minutes")).unwrap(), 300_000_000);
        let interval = ScalarValue::new_interval_mdn(0, 1, 0);
        assert_eq!(duration_micros(&interval).unwrap(), 86_400_000_000);
        assert!(duration_micros(&ScalarValue::from("0 minutes")).is_err());
    }
}
