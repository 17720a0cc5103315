//! Event-time windows as SQL functions, for use in `GROUP BY`.
//!
//! | call | window | value |
//! | --- | --- | --- |
//! | `window(ts, '5 minutes')`, `tumble(ts, '5 minutes')` | tumbling | struct `{start, end}` |
//! | `window(ts, '10 minutes', '5 minutes')`, `hop(ts, '10 minutes', '5 minutes')` | hopping (size, slide) | one row per window |
//! | `session_window(ts, '5 minutes')`, `session(ts, '5 minutes')` | session (gap) | struct `{start, end}` |
//!
//! A session of a key is a run of its events with gaps shorter than `gap`: it starts
//! at its first event and ends `gap` after its last (as in Spark). In a batch query
//! the [`SessionWindows`] analyzer rule computes sessions with standard window
//! functions; in a pipeline each event starts as its own session `[t, t + gap)` and
//! the aggregation merges overlapping sessions of a key (`operators::aggregate`).
//!
//! Sizes are strings like `'5 minutes'` (Spark's form) or `INTERVAL` literals. Windows
//! are aligned to the Unix epoch, as in Spark. A hopping window puts an event into
//! several windows. The [`ExpandHoppingWindows`] analyzer rule rewrites its `GROUP BY`
//! in one of two ways:
//!
//! * in a batch query, into `GROUP BY` over an `UNNEST` of the list of the event's
//!   windows (one row per event and window, as Spark's Expand does);
//! * in a pipeline, into `GROUP BY` the event's *pane*: the hopping function's
//!   [`HopPane`] form gives each event the slice of `gcd(size, slide)` it falls in,
//!   and the aggregation (`operators::aggregate`) aggregates a micro-batch per pane
//!   first and only then merges each pane's partial state into the windows that
//!   cover it. An event is read once, not once per window.
//!
//! The source may carry a hidden column `__watermark` (in a pipeline, the watermark
//! each event saw, see `pipeline::watermark`); the rule passes it to the hopping
//! function, which then leaves out the windows that were already closed for that
//! event.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBufferBuilder, ListArray, StructArray, TimestampMicrosecondArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, TimeUnit, TimestampMicrosecondType};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue, plan_err};
use datafusion::config::ConfigOptions;
use datafusion::functions::core::expr_fn::named_struct;
use datafusion::functions::datetime::expr_fn::to_timestamp_micros;
use datafusion::functions_aggregate::expr_fn::{max, min};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{
    Aggregate, ColumnarValue, Expr, ExprFunctionExt, ExprSchemable, LogicalPlan, LogicalPlanBuilder, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, WindowFrame, WindowFrameBound,
    WindowFrameUnits, WindowFunctionDefinition, cast, col, lit, when,
};
use datafusion::optimizer::AnalyzerRule;

/// The hidden source column holding the watermark each event saw.
pub const WATERMARK_COLUMN: &str = "__watermark";

const TIME: DataType = DataType::Timestamp(TimeUnit::Microsecond, None);

/// `{start, end}`, the value of one window.
pub fn window_struct_fields() -> Fields {
    Fields::from(vec![Field::new("start", TIME, true), Field::new("end", TIME, true)])
}

/// Windows `{start, end}` as a struct array (`nulls`: rows without a window).
pub fn window_array(starts: Vec<i64>, ends: Vec<i64>, nulls: Option<NullBuffer>) -> DfResult<StructArray> {
    Ok(StructArray::try_new(
        window_struct_fields(),
        vec![
            Arc::new(TimestampMicrosecondArray::from(starts)) as ArrayRef,
            Arc::new(TimestampMicrosecondArray::from(ends)),
        ],
        nulls,
    )?)
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
    Session { gap: i64 },
}

impl WindowSpec {
    /// The end of the last window that contains an event at `t`.
    pub fn last_end(&self, t: i64) -> i64 {
        match *self {
            WindowSpec::Tumbling { size } => t - t.rem_euclid(size) + size,
            WindowSpec::Hopping { size, slide } => t - t.rem_euclid(slide) + size,
            WindowSpec::Session { gap } => t + gap,
        }
    }

    /// Whether an event at `time` is late under `watermark`: every window it belongs
    /// to has ended. A session can still grow from an event at or after the
    /// watermark, and an event before it could only join sessions that have closed.
    pub fn is_late(&self, time: i64, watermark: Option<i64>) -> bool {
        match (self, watermark) {
            (_, None) => false,
            (WindowSpec::Session { .. }, Some(w)) => time < w,
            (_, Some(w)) => self.last_end(time) <= w,
        }
    }
}

/// The names a window function goes by.
pub const WINDOW_FUNCTIONS: [&str; 5] = ["window", "tumble", "hop", "session_window", "session"];

/// The names of session windows.
pub const SESSION_FUNCTIONS: [&str; 2] = ["session_window", "session"];

/// All our functions, to register in a session.
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(WindowUdf::new("window")),
        ScalarUDF::new_from_impl(WindowUdf::new("tumble")),
        ScalarUDF::new_from_impl(WindowUdf::new("hop")),
        ScalarUDF::new_from_impl(WindowUdf::new("session_window")),
        ScalarUDF::new_from_impl(WindowUdf::new("session")),
    ]
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowUdf {
    name: &'static str,
    signature: Signature,
}

impl WindowUdf {
    fn new(name: &'static str) -> Self {
        WindowUdf { name, signature: Signature::user_defined(Volatility::Immutable) }
    }

    /// Whether a call with `n` arguments is a hopping window.
    fn hopping(&self, n: usize) -> bool {
        self.name == "hop" || (self.name == "window" && n >= 3)
    }

    fn arity_error(&self) -> DataFusionError {
        DataFusionError::Plan(match self.name {
            "session_window" | "session" => format!("{}(time, gap) takes a time column and a duration", self.name),
            "hop" => "hop(time, size, slide) takes a time column and two durations".into(),
            "tumble" => "tumble(time, size) takes a time column and a duration".into(),
            _ => "window(time, size [, slide]) takes a time column and one or two durations".into(),
        })
    }
}

/// Reads a duration argument: `'5 minutes'` or an `INTERVAL` literal, in microseconds.
pub fn duration_micros(value: &ScalarValue) -> DfResult<i64> {
    // In i128: an interval of two billion days overflows 64-bit microseconds.
    let micros: i128 = match value {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            crate::pipeline::definition::parse_duration(s).map_err(DataFusionError::Plan)?.as_micros() as i128
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            v.days as i128 * 86_400_000_000 + v.nanoseconds as i128 / 1000
        }
        ScalarValue::IntervalDayTime(Some(v)) => v.days as i128 * 86_400_000_000 + v.milliseconds as i128 * 1000,
        other => return plan_err!("a window size must be a duration like '5 minutes', not {other}"),
    };
    if micros <= 0 {
        return plan_err!("a window size must be positive, not {value}");
    }
    if micros > crate::pipeline::definition::MAX_DURATION.as_micros() as i128 {
        return plan_err!("a window size must be at most 10,000 years, not {value}");
    }
    Ok(micros as i64)
}

/// A window function's argument types: the time (first) and the watermark (fourth)
/// as timestamps, the durations as they are.
fn time_arguments(arg_types: &[DataType]) -> Vec<DataType> {
    arg_types.iter().enumerate().map(|(i, t)| if i == 0 || i == 3 { TIME } else { t.clone() }).collect()
}

/// Argument `i` of a window call, a constant duration, in microseconds.
fn duration_argument(args: &ScalarFunctionArgs, i: usize) -> DfResult<i64> {
    match &args.args[i] {
        ColumnarValue::Scalar(s) => duration_micros(s),
        ColumnarValue::Array(_) => plan_err!("window sizes must be constants"),
    }
}

/// A window function's time argument, as timestamps.
fn timestamps<'a>(times: &'a ArrayRef, function: &str) -> DfResult<&'a TimestampMicrosecondArray> {
    times.as_primitive_opt::<TimestampMicrosecondType>().ok_or_else(|| {
        DataFusionError::Execution(format!("{function}: expected a timestamp, got {}", times.data_type()))
    })
}

impl ScalarUDFImpl for WindowUdf {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        let max = match self.name {
            "tumble" | "session_window" | "session" => 2,
            _ => 4,
        };
        if arg_types.len() < 2 || arg_types.len() > max || (self.name == "hop" && arg_types.len() < 3) {
            return Err(self.arity_error());
        }
        Ok(time_arguments(arg_types))
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
        let duration = |i: usize| duration_argument(&args, i);
        let times = args.args[0].to_array(n)?;
        let times = timestamps(&times, self.name)?;
        if SESSION_FUNCTIONS.contains(&self.name) {
            // Each event's own session; a batch query merges them with `SessionWindows`,
            // a pipeline in its state store.
            let gap = duration(1)?;
            let ends: TimestampMicrosecondArray = times.unary_opt(|t| t.checked_add(gap));
            let array = StructArray::try_new(
                window_struct_fields(),
                vec![Arc::new(times.clone()) as ArrayRef, Arc::new(ends)],
                times.nulls().cloned(),
            )?;
            return Ok(ColumnarValue::Array(Arc::new(array)));
        }
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
        let windows = window_array(starts, ends, None)?;
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(window_struct_type(), true)),
            OffsetBuffer::new(offsets.into()),
            Arc::new(windows),
            None,
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

/// The pane of an event in hopping windows of `size` every `slide`: the slice of
/// `gcd(size, slide)` it falls in. Every window either covers a pane whole or not at
/// all, so a window's aggregate is the merge of its panes' aggregates.
///
/// `hop_pane(time, size, slide [, watermark])` returns `{start, end}`: `start` is the
/// pane's start and `end` the end of the first window the event counts in, the
/// earliest window covering the pane or, when the event's watermark had already
/// closed some of those, the first still open. The event counts in the windows that
/// cover the pane and end at or after `end` ([`HopPane::windows`]). NULL: no window
/// was open for it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HopPane {
    signature: Signature,
}

impl HopPane {
    pub const NAME: &str = "__hop_pane";

    pub fn new() -> Self {
        HopPane { signature: Signature::user_defined(Volatility::Immutable) }
    }

    /// The pane of an event at `t` and the end of the first window it counts in,
    /// given its watermark; `None` when every window covering it had closed.
    pub fn pane(t: i64, size: i64, slide: i64, watermark: Option<i64>) -> Option<(i64, i64)> {
        let width = gcd(size, slide);
        let start = t - t.rem_euclid(width);
        // The earliest window covering the pane starts at the first multiple of
        // `slide` after `start - size`; the first open one at the first after
        // `watermark - size`.
        let first_start_after = |x: i64| x - x.rem_euclid(slide) + slide;
        let mut first_end = first_start_after(start - size) + size;
        if let Some(w) = watermark {
            first_end = first_end.max(first_start_after(w - size) + size);
        }
        let last_end = start - start.rem_euclid(slide) + size;
        (first_end <= last_end).then_some((start, first_end))
    }

    /// The starts of the windows a pane `{start, first_end}` counts in, earliest first.
    pub fn windows(start: i64, first_end: i64, size: i64, slide: i64) -> impl Iterator<Item = i64> {
        let last_start = start - start.rem_euclid(slide);
        let first_start = first_end - size;
        (0..).map(move |k| first_start + k * slide).take_while(move |&s| s <= last_start)
    }
}

impl Default for HopPane {
    fn default() -> Self {
        Self::new()
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl ScalarUDFImpl for HopPane {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        Ok(time_arguments(arg_types))
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(window_struct_type())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let (size, slide) = (duration_argument(&args, 1)?, duration_argument(&args, 2)?);
        let times = args.args[0].to_array(n)?;
        let times = timestamps(&times, "hop")?;
        let watermarks = args.args.get(3).map(|w| w.to_array(n)).transpose()?;
        let watermarks = watermarks.as_ref().and_then(|w| w.as_primitive_opt::<TimestampMicrosecondType>());
        let (mut starts, mut ends) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut valid = BooleanBufferBuilder::new(n);
        for row in 0..n {
            let watermark = watermarks.filter(|w| w.is_valid(row)).map(|w| w.value(row));
            let pane = times.is_valid(row).then(|| Self::pane(times.value(row), size, slide, watermark)).flatten();
            let (start, end) = pane.unwrap_or_default();
            starts.push(start);
            ends.push(end);
            valid.append(pane.is_some());
        }
        let nulls = NullBuffer::new(valid.finish());
        let array = window_array(starts, ends, (nulls.null_count() > 0).then_some(nulls))?;
        Ok(ColumnarValue::Array(Arc::new(array)))
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
    let spec = if SESSION_FUNCTIONS.contains(&func.name()) {
        WindowSpec::Session { gap: literal(1)? }
    } else if hopping {
        WindowSpec::Hopping { size: literal(1)?, slide: literal(2)? }
    } else {
        WindowSpec::Tumbling { size: literal(1)? }
    };
    Ok(Some(WindowCall { group_index, time_column, spec }))
}

/// Rewrites `GROUP BY hop(...)`: in a batch query into `GROUP BY` over
/// `UNNEST(hop(...))`, one row per (event, window), as Spark's Expand does for sliding
/// windows; in a pipeline into `GROUP BY` the event's pane ([`HopPane`]), which the
/// aggregation spreads over the windows itself.
#[derive(Debug)]
pub struct ExpandHoppingWindows {
    pub into_panes: bool,
}

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
            if self.into_panes {
                let pane =
                    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(ScalarUDF::from(HopPane::new())), call.args));
                let mut group_expr = agg.group_expr.clone();
                group_expr[index] = pane.alias(original_name);
                let aggregate = Aggregate::try_new(agg.input.clone(), group_expr, agg.aggr_expr.clone())?;
                return Ok(Transformed::yes(LogicalPlan::Aggregate(aggregate)));
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

/// Computes session windows in a batch query: rewrites
/// `Aggregate(GROUP BY keys…, session_window(ts, gap))` into the usual SQL
/// sessionisation — a new session where `ts - LAG(ts) >= gap` within the keys, a
/// running `SUM` of those starts as the session id, `GROUP BY keys…, id`, and the
/// window `{MIN(ts), MAX(ts) + gap}` — with the aggregate's output unchanged.
/// Not used in pipelines, whose state store merges sessions incrementally.
#[derive(Debug, Default)]
pub struct SessionWindows;

impl AnalyzerRule for SessionWindows {
    fn name(&self) -> &str {
        "session_windows"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up(|node| {
            let LogicalPlan::Aggregate(agg) = &node else {
                return Ok(Transformed::no(node));
            };
            let session =
                agg.group_expr.iter().enumerate().find_map(|(i, expr)| match expr.clone().unalias_nested().data {
                    Expr::ScalarFunction(f) if SESSION_FUNCTIONS.contains(&f.func.name()) => Some((i, f)),
                    _ => None,
                });
            let Some((index, call)) = session else { return Ok(Transformed::no(node)) };
            let Some(WindowCall { spec: WindowSpec::Session { gap }, .. }) =
                window_call(index, &agg.group_expr[index])?
            else {
                return plan_err!("session_window needs a time column and a constant gap");
            };
            let time = call.args[0].clone();
            let keys: Vec<Expr> = agg
                .group_expr
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .map(|(_, e)| e.clone().unalias_nested().data)
                .collect();
            let by_time = vec![time.clone().sort(true, false)];
            let micros = |e: Expr| cast(e, DataType::Int64);
            let previous = datafusion::functions_window::expr_fn::lag(time.clone(), Some(1), None)
                .partition_by(keys.clone())
                .order_by(by_time.clone())
                .build()?
                .alias("__session_previous");
            let starts = when(
                col("__session_previous")
                    .is_null()
                    .or((micros(time.clone()) - micros(col("__session_previous"))).gt_eq(lit(gap))),
                lit(1i64),
            )
            .otherwise(lit(0i64))?;
            let running =
                WindowFunction::new(WindowFunctionDefinition::AggregateUDF(sum_udaf()), vec![col("__session_starts")]);
            let session_id = Expr::from(running)
                .partition_by(keys.clone())
                .order_by(by_time)
                .window_frame(WindowFrame::new_bounds(
                    WindowFrameUnits::Rows,
                    WindowFrameBound::Preceding(ScalarValue::UInt64(None)),
                    WindowFrameBound::CurrentRow,
                ))
                .build()?
                .alias("__session_id");
            let input_columns: Vec<Expr> = agg.input.schema().columns().into_iter().map(Expr::Column).collect();
            let mut with_starts = input_columns.clone();
            with_starts.push(starts.alias("__session_starts"));
            let numbered = LogicalPlanBuilder::from(agg.input.as_ref().clone())
                .window(vec![previous])?
                .project(with_starts)?
                .window(vec![session_id])?
                .build()?;
            let mut group_expr: Vec<Expr> =
                agg.group_expr.iter().enumerate().filter(|(i, _)| *i != index).map(|(_, e)| e.clone()).collect();
            group_expr.push(col("__session_id"));
            let mut aggr_expr = agg.aggr_expr.clone();
            aggr_expr.push(min(time.clone()).alias("__session_first"));
            aggr_expr.push(max(time).alias("__session_last"));
            let grouped = Aggregate::try_new(Arc::new(numbered), group_expr, aggr_expr)?;
            let grouped_schema = grouped.schema.clone();
            // Back to the original aggregate's columns, in its order and with its names.
            let window = named_struct(vec![
                lit("start"),
                col("__session_first"),
                lit("end"),
                to_timestamp_micros(vec![micros(col("__session_last")) + lit(gap)]),
            ]);
            // The new aggregate's columns: the other keys, the session id, the
            // aggregates, first and last time. Map the original's columns onto them.
            let groups = agg.group_expr.len();
            let mut output = Vec::new();
            for (i, (qualifier, field)) in agg.schema.iter().enumerate() {
                let expr = if i == index {
                    window.clone()
                } else {
                    let source = if i < index || i >= groups { i } else { i - 1 };
                    Expr::Column(datafusion::common::Column::from(grouped_schema.qualified_field(source)))
                };
                output.push(expr.alias_qualified(qualifier.cloned(), field.name()));
            }
            let plan = LogicalPlanBuilder::from(LogicalPlan::Aggregate(grouped)).project(output)?.build()?;
            Ok(Transformed::yes(plan))
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
    fn a_pane_counts_in_the_open_windows_that_cover_it() {
        // Windows of 10 every 4: panes of 2. An event at 7 is in pane [6, 8), covered
        // by the windows starting at 0 and 4.
        let (size, slide) = (10, 4);
        assert_eq!(HopPane::pane(7, size, slide, None), Some((6, 10)));
        assert_eq!(HopPane::windows(6, 10, size, slide).collect::<Vec<_>>(), vec![0, 4]);
        // The window [0, 10) closed for it: only [4, 14) is left.
        assert_eq!(HopPane::pane(7, size, slide, Some(11)), Some((6, 14)));
        assert_eq!(HopPane::windows(6, 14, size, slide).collect::<Vec<_>>(), vec![4]);
        // Every window closed: no pane.
        assert_eq!(HopPane::pane(7, size, slide, Some(14)), None);
        // Negative times (before the epoch) align the same way.
        assert_eq!(HopPane::pane(-1, size, slide, None), Some((-2, 2)));
        assert_eq!(HopPane::windows(-2, 2, size, slide).collect::<Vec<_>>(), vec![-8, -4]);
    }

    #[test]
    fn a_pane_spreads_over_the_windows_the_list_form_gives() {
        // The list form, written out: every window start `s` (a multiple of `slide`)
        // with `s <= t < s + size` and `s + size > watermark`.
        let windows_of = |t: i64, size: i64, slide: i64, watermark: Option<i64>| -> Vec<i64> {
            let mut starts: Vec<i64> = ((t - size) / slide - 2..=t / slide + 2)
                .map(|k| k * slide)
                .filter(|&s| s <= t && t < s + size && watermark.is_none_or(|w| s + size > w))
                .collect();
            starts.sort();
            starts
        };
        for (size, slide) in [(10, 2), (10, 4), (9, 6), (6, 6), (5, 7)] {
            for t in -30..30 {
                for watermark in [None, Some(t - 12), Some(t - 3), Some(t), Some(t + 4), Some(t + 20)] {
                    let spread = match HopPane::pane(t, size, slide, watermark) {
                        Some((start, first_end)) => HopPane::windows(start, first_end, size, slide).collect(),
                        None => Vec::new(),
                    };
                    assert_eq!(
                        spread,
                        windows_of(t, size, slide, watermark),
                        "t={t} size={size} slide={slide} {watermark:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn durations_come_from_strings_and_intervals() {
        assert_eq!(duration_micros(&ScalarValue::from("5 minutes")).unwrap(), 300_000_000);
        let interval = ScalarValue::new_interval_mdn(0, 1, 0);
        assert_eq!(duration_micros(&interval).unwrap(), 86_400_000_000);
        assert!(duration_micros(&ScalarValue::from("0 minutes")).is_err());
        // Two billion days: beyond 64-bit microseconds, a plan error rather than an overflow.
        for huge in [ScalarValue::new_interval_mdn(0, i32::MAX, 0), ScalarValue::new_interval_dt(i32::MAX, 0)] {
            let error = duration_micros(&huge).unwrap_err().to_string();
            assert!(error.contains("at most 10,000 years"), "{error}");
        }
    }
}
