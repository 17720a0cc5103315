//! JSON records → Arrow rows of the declared source schema, with a reason for every
//! record that cannot be decoded.
//!
//! The fast path hands a whole micro-batch to arrow-json's vectorised decoder. If that
//! fails, the batch is split in halves until each failure is pinned to one record,
//! so one bad record costs O(log n) re-decodes, not a slow path for everything.
//!
//! Top-level TIMESTAMP columns are decoded as text first and parsed here, because the
//! events carry ISO-8601 (with or without offset; no offset means UTC) *or* epoch
//! milliseconds, which arrow-json cannot tell apart from microseconds. Because of
//! that, arrow-json runs with `coerce_primitive`: a number or boolean given for a
//! string column is taken as its text, as Spark's JSON reader does.

use std::sync::Arc;

use arrow_json::ReaderBuilder;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBufferBuilder, BooleanBuilder, Int32Array, Int32Builder, Int64Array,
    Int64Builder, StringArray, StringBuilder, StringViewArray, StringViewBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use rayon::prelude::*;

use crate::error::Result;
use crate::source::schema::{EVENT_TIME_TYPE, SourceSchema};

/// Records longer than this are rejected without being parsed (default of `--max-record-bytes`).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// Records whose objects and arrays nest deeper than this are rejected without being
/// parsed: decoders recurse per level, and 100,000 levels (200 KB) would overflow the
/// thread's stack and abort the process. serde_json stops at the same depth.
pub const MAX_NESTING: usize = 128;

pub struct JsonDecoder {
    declared: SchemaRef,
    /// The declared schema with top-level timestamps as text and every top-level field
    /// nullable, so that we, not arrow-json, word the "missing field" errors.
    decode_schema: SchemaRef,
    /// The declared schema with every top-level field nullable.
    nullable: SchemaRef,
    timestamp_columns: Vec<usize>,
    event_time: Option<usize>,
    max_record_bytes: usize,
    /// arrow-json's decoder from the last batch that decoded cleanly, with the batch
    /// size it was built for. Reused because it keeps its buffers: a new one per batch
    /// grows them from nothing (reallocations and fresh pages for every batch, a tenth
    /// of a pipeline's time). One that failed or panicked mid-record is dropped.
    /// (One per chunk decoded at once, see [`Self::decode_in_parallel`].)
    spare: std::sync::Mutex<Vec<(usize, arrow_json::reader::Decoder)>>,
    /// The fast path for flat records of plain values, if every column's type has one.
    flat: Option<FlatDecoder>,
}

/// A column the fast path checks but does not build (see [`JsonDecoder::leave_unread`]).
const UNREAD_KINDS: [DataType; 5] =
    [DataType::Int64, DataType::Int32, DataType::Boolean, DataType::Utf8, DataType::Utf8View];

/// The outcome of decoding a micro-batch of records.
#[derive(Debug)]
pub struct Decoded {
    /// The good records, in input order, in the declared schema.
    pub batch: RecordBatch,
    /// For each row of `batch`, the index of its record in the input.
    pub rows: Vec<usize>,
    /// Records that could not be decoded: (index in the input, reason).
    pub bad: Vec<(usize, String)>,
}

impl JsonDecoder {
    pub fn new(source: &SourceSchema, max_record_bytes: usize) -> Self {
        let declared = source.schema.clone();
        let mut timestamp_columns = Vec::new();
        let fields: Vec<Field> = declared
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if f.data_type() == &EVENT_TIME_TYPE {
                    timestamp_columns.push(i);
                    Field::new(f.name(), DataType::Utf8, true)
                } else {
                    f.as_ref().clone().with_nullable(true)
                }
            })
            .collect();
        let nullable = Arc::new(Schema::new(
            declared.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
        ));
        let decode_schema = Arc::new(Schema::new(fields));
        JsonDecoder {
            declared,
            nullable,
            flat: FlatDecoder::new(&decode_schema),
            decode_schema,
            timestamp_columns,
            event_time: source.event_time,
            max_record_bytes,
            spare: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.declared
    }

    /// Columns the pipeline never reads (`StreamingPlan::unread_source_columns`): the
    /// fast path still checks each value (a record is bad or good exactly as before, a
    /// missing required field included) but does not copy it, and the column holds
    /// placeholders (zeros, empty strings) with the values' validity. Text, integer
    /// and boolean columns only: a timestamp is checked by parsing it.
    pub fn leave_unread(&mut self, columns: &[usize]) {
        if let Some(flat) = &mut self.flat {
            flat.unread = columns
                .iter()
                .filter(|&&c| c < 64 && UNREAD_KINDS.contains(self.declared.field(c).data_type()))
                .fold(0, |mask, &c| mask | 1 << c);
        }
    }

    /// Decodes `records` as [`Self::decode`] does, in up to `workers` chunks at once on
    /// rayon's threads (a chunk is at least a few thousand records).
    pub fn decode_in_parallel(&self, records: &[&[u8]], workers: usize) -> Result<Decoded> {
        const MIN_CHUNK: usize = 4096;
        let chunks = workers.min(records.len() / MIN_CHUNK).max(1);
        if chunks == 1 {
            return self.decode(records);
        }
        let size = records.len().div_ceil(chunks);
        let parts: Vec<Decoded> = records.par_chunks(size).map(|chunk| self.decode(chunk)).collect::<Result<_>>()?;
        let (mut rows, mut bad) = (Vec::with_capacity(records.len()), Vec::new());
        for (k, part) in parts.iter().enumerate() {
            rows.extend(part.rows.iter().map(|r| r + k * size));
            bad.extend(part.bad.iter().map(|(r, reason)| (r + k * size, reason.clone())));
        }
        let batch = concat_batches(&parts[0].batch.schema(), parts.iter().map(|p| &p.batch))?;
        Ok(Decoded { batch, rows, bad })
    }

    /// Decodes `records` (one JSON object each, without the newline).
    pub fn decode(&self, records: &[&[u8]]) -> Result<Decoded> {
        let mut bad = Vec::new();
        let mut candidates = Vec::with_capacity(records.len());
        let mut texts = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            if record.len() > self.max_record_bytes {
                bad.push((
                    i,
                    format!("record of {} bytes exceeds the limit of {} bytes", record.len(), self.max_record_bytes),
                ));
            } else {
                match std::str::from_utf8(record) {
                    Err(e) => bad.push((i, format!("not valid UTF-8 (at byte {})", e.valid_up_to()))),
                    Ok(_) if nests_deeper_than(record, MAX_NESTING) => {
                        bad.push((i, format!("nested deeper than {MAX_NESTING} levels")))
                    }
                    Ok(text) => {
                        candidates.push(i);
                        texts.push(text);
                    }
                }
            }
        }
        let flat = self.flat.as_ref().and_then(|flat| flat.decode(&self.decode_schema, &texts));
        let (raw, rows) = match flat {
            Some(batch) => (batch, candidates),
            None => {
                let mut parts = Vec::new();
                self.decode_range(records, &candidates, &mut parts, &mut bad);
                let mut rows: Vec<usize> = Vec::with_capacity(candidates.len());
                let batches: Vec<RecordBatch> = parts
                    .into_iter()
                    .map(|(batch, idx)| {
                        rows.extend(idx);
                        batch
                    })
                    .collect();
                (concat_batches(&self.decode_schema, &batches)?, rows)
            }
        };
        let (batch, rows) = self.finish(raw, rows, &mut bad)?;
        bad.sort_by_key(|(i, _)| *i);
        Ok(Decoded { batch, rows, bad })
    }

    /// Decodes `idx` in one go if it can, else halves it; single failures become bad records.
    /// A panic in the decoder (a bug of arrow-json's or ours that some record triggers)
    /// is a failure like any other: the record that causes it becomes a bad record, and
    /// the pipeline goes on.
    fn decode_range(
        &self,
        records: &[&[u8]],
        idx: &[usize],
        out: &mut Vec<(RecordBatch, Vec<usize>)>,
        bad: &mut Vec<(usize, String)>,
    ) {
        if idx.is_empty() {
            return;
        }
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decode_all(records, idx)));
        let result =
            attempt.unwrap_or_else(|panic| Err(format!("the decoder failed on it: {}", panic_message(&panic))));
        match result {
            Ok(batch) => out.push((batch, idx.to_vec())),
            Err(reason) if idx.len() == 1 => bad.push((idx[0], reason)),
            Err(_) => {
                let (left, right) = idx.split_at(idx.len() / 2);
                self.decode_range(records, left, out, bad);
                self.decode_range(records, right, out, bad);
            }
        }
    }

    fn decode_all(&self, records: &[&[u8]], idx: &[usize]) -> Result<RecordBatch, String> {
        let spare = {
            let mut spares = self.spare.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let fits = spares.iter().position(|(size, _)| *size >= idx.len());
            fits.map(|at| spares.swap_remove(at))
        };
        let (batch_size, mut decoder) = match spare {
            Some(spare) => spare,
            None => {
                let decoder = ReaderBuilder::new(self.decode_schema.clone())
                    .with_batch_size(idx.len().max(1))
                    .with_coerce_primitive(true)
                    .build_decoder()
                    .map_err(|e| e.to_string())?;
                (idx.len().max(1), decoder)
            }
        };
        for &i in idx {
            let record = records[i];
            let read = decoder.decode(record).map_err(|e| e.to_string())?;
            // A separator, so that `1` and `2` on two lines are not read as `12`.
            decoder.decode(b"\n").map_err(|e| e.to_string())?;
            if read != record.len() || decoder.has_partial_record() {
                return Err(if decoder.has_partial_record() {
                    "truncated JSON: the record ends inside an object".to_string()
                } else {
                    "expected one JSON object per record".to_string()
                });
            }
        }
        let batch = decoder.flush().map_err(|e| e.to_string())?;
        let batch = batch.unwrap_or_else(|| RecordBatch::new_empty(self.decode_schema.clone()));
        if batch.num_rows() != idx.len() {
            return Err("expected one JSON object per record".to_string());
        }
        self.spare.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((batch_size, decoder));
        Ok(batch)
    }

    /// Parses the timestamps, checks required fields, drops the rows that fail.
    fn finish(
        &self,
        raw: RecordBatch,
        rows: Vec<usize>,
        bad: &mut Vec<(usize, String)>,
    ) -> Result<(RecordBatch, Vec<usize>)> {
        let n = raw.num_rows();
        let mut keep = vec![true; n];
        let mut columns: Vec<ArrayRef> = raw.columns().to_vec();
        for &c in &self.timestamp_columns {
            let text = columns[c].as_any().downcast_ref::<StringArray>().expect("timestamps are decoded as text");
            let name = self.declared.field(c).name();
            // Values and validity apart (not a `Vec<Option<i64>>`): this runs once per event.
            let mut values = Vec::with_capacity(n);
            let mut valid = Vec::new();
            let mut day = None;
            for (r, keep) in keep.iter_mut().enumerate() {
                let value = match text.is_null(r) {
                    true => None,
                    false => match parse_timestamp_micros_on(text.value(r), &mut day) {
                        Ok(v) => Some(v),
                        Err(reason) => {
                            if *keep {
                                bad.push((rows[r], format!("field `{name}`: {reason}")));
                                *keep = false;
                            }
                            None
                        }
                    },
                };
                if value.is_none() && valid.is_empty() {
                    valid = vec![true; n];
                }
                if !valid.is_empty() {
                    valid[r] = value.is_some();
                }
                values.push(value.unwrap_or_default());
            }
            let nulls = (!valid.is_empty()).then(|| NullBuffer::from(valid));
            columns[c] = Arc::new(TimestampMicrosecondArray::new(values.into(), nulls));
        }
        for (c, field) in self.declared.fields().iter().enumerate() {
            let required = !field.is_nullable() || Some(c) == self.event_time;
            if !required || columns[c].null_count() == 0 {
                continue;
            }
            for (r, keep) in keep.iter_mut().enumerate() {
                if *keep && columns[c].is_null(r) {
                    bad.push((rows[r], format!("missing required field `{}`", field.name())));
                    *keep = false;
                }
            }
        }
        if keep.iter().all(|k| *k) {
            return Ok((RecordBatch::try_new(self.declared.clone(), columns)?, rows));
        }
        // Nulls may remain in rows about to be dropped, so filter under an all-nullable
        // schema first; what is left satisfies the declared one.
        let all_nullable = RecordBatch::try_new(self.nullable.clone(), columns)?;
        let kept = filter_record_batch(&all_nullable, &BooleanArray::from(keep.clone()))?;
        let batch = RecordBatch::try_new(self.declared.clone(), kept.columns().to_vec())?;
        let rows = rows.into_iter().zip(keep).filter_map(|(r, k)| k.then_some(r)).collect();
        Ok((batch, rows))
    }
}

/// The fast path: flat records whose values are plain scalars, read by hand straight
/// into the columns. arrow-json's decoder puts every record on a tape first and then
/// walks the tape once per column, which was half of a pipeline's time.
///
/// It reads a strict subset of what arrow-json reads, to the same values: objects of
/// unescaped keys, each given once, with unescaped strings for text columns, integers
/// without fraction or exponent for integer columns, `true`/`false` for booleans,
/// `null` anywhere, and other keys with scalar values (ignored, as arrow-json does). On
/// anything else — an escape, a nested value, a number for a text column, a float, a
/// repeated key, JSON that is not valid — it gives up, and the whole batch takes the
/// general path: values and reasons for bad records stay arrow-json's.
struct FlatDecoder {
    /// Each column's name and type, in the order of the decode schema.
    fields: Vec<(String, FlatType)>,
    /// Each column's key as it is written in a record, quotes included: keys are
    /// matched where they stand, without reading them out first.
    quoted: Vec<Vec<u8>>,
    /// Columns (by bit) checked but not built: see [`JsonDecoder::leave_unread`].
    unread: u64,
}

#[derive(Clone, Copy)]
enum FlatType {
    Int64,
    Int32,
    Boolean,
    Utf8,
    Utf8View,
}

/// The columns being built.
enum FlatColumn {
    Int64(Int64Builder),
    Int32(Int32Builder),
    Boolean(BooleanBuilder),
    Utf8(StringBuilder),
    Utf8View(StringViewBuilder),
    /// A column no one reads: each value checked as its kind, only its validity kept.
    Unread(FlatType, BooleanBufferBuilder),
}

impl FlatColumn {
    fn append_null(&mut self) {
        match self {
            FlatColumn::Int64(b) => b.append_null(),
            FlatColumn::Int32(b) => b.append_null(),
            FlatColumn::Boolean(b) => b.append_null(),
            FlatColumn::Utf8(b) => b.append_null(),
            FlatColumn::Utf8View(b) => b.append_null(),
            FlatColumn::Unread(_, valid) => valid.append(false),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            FlatColumn::Int64(mut b) => Arc::new(b.finish()),
            FlatColumn::Int32(mut b) => Arc::new(b.finish()),
            FlatColumn::Boolean(mut b) => Arc::new(b.finish()),
            FlatColumn::Utf8(mut b) => Arc::new(b.finish()),
            FlatColumn::Utf8View(mut b) => Arc::new(b.finish()),
            FlatColumn::Unread(kind, mut valid) => {
                let n = valid.len();
                let nulls = Some(NullBuffer::new(valid.finish())).filter(|nulls| nulls.null_count() > 0);
                match kind {
                    FlatType::Int64 => Arc::new(Int64Array::new(vec![0; n].into(), nulls)),
                    FlatType::Int32 => Arc::new(Int32Array::new(vec![0; n].into(), nulls)),
                    FlatType::Boolean => Arc::new(BooleanArray::new(BooleanBuffer::new_unset(n), nulls)),
                    FlatType::Utf8 => {
                        Arc::new(StringArray::new(OffsetBuffer::new_zeroed(n), Buffer::from(Vec::<u8>::new()), nulls))
                    }
                    FlatType::Utf8View => Arc::new(StringViewArray::new(vec![0u128; n].into(), Vec::new(), nulls)),
                }
            }
        }
    }
}

impl FlatDecoder {
    /// `None` if some column has a type without a fast path, a name that JSON
    /// would write with escapes, or there are too many columns to track repeated keys
    /// in a `u64`.
    fn new(schema: &Schema) -> Option<Self> {
        let plain = |name: &str| name.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
        if schema.fields().len() > 64 || !schema.fields().iter().all(|f| plain(f.name())) {
            return None;
        }
        let fields = schema.fields().iter().map(|f| {
            let kind = match f.data_type() {
                DataType::Int64 => FlatType::Int64,
                DataType::Int32 => FlatType::Int32,
                DataType::Boolean => FlatType::Boolean,
                DataType::Utf8 => FlatType::Utf8,
                DataType::Utf8View => FlatType::Utf8View,
                _ => return None,
            };
            Some((f.name().clone(), kind))
        });
        let fields: Vec<(String, FlatType)> = fields.collect::<Option<_>>()?;
        let quoted = fields.iter().map(|(name, _)| format!("\"{name}\"").into_bytes()).collect();
        Some(FlatDecoder { fields, quoted, unread: 0 })
    }

    /// The records as one batch of `schema`, or `None` if one of them is not for the fast path.
    fn decode(&self, schema: &SchemaRef, records: &[&str]) -> Option<RecordBatch> {
        let n = records.len();
        let mut columns: Vec<FlatColumn> = self
            .fields
            .iter()
            .enumerate()
            .map(|(c, (_, kind))| match kind {
                _ if self.unread & (1 << c) != 0 => FlatColumn::Unread(*kind, BooleanBufferBuilder::new(n)),
                FlatType::Int64 => FlatColumn::Int64(Int64Builder::with_capacity(n)),
                FlatType::Int32 => FlatColumn::Int32(Int32Builder::with_capacity(n)),
                FlatType::Boolean => FlatColumn::Boolean(BooleanBuilder::with_capacity(n)),
                FlatType::Utf8 => FlatColumn::Utf8(StringBuilder::with_capacity(n, n * 32)),
                FlatType::Utf8View => FlatColumn::Utf8View(StringViewBuilder::with_capacity(n)),
            })
            .collect();
        // Values go straight into the columns as they are read: a record the fast path
        // gives up on gives up the whole batch, so what it appended does not matter.
        let all = u64::MAX >> (64 - self.fields.len().max(1));
        for record in records {
            let seen = self.read(record, &mut columns)?;
            if seen != all {
                // Absent keys are nulls.
                for (c, column) in columns.iter_mut().enumerate() {
                    if seen & (1 << c) == 0 {
                        column.append_null();
                    }
                }
            }
        }
        let arrays: Vec<ArrayRef> = columns.into_iter().map(FlatColumn::finish).collect();
        RecordBatch::try_new(schema.clone(), arrays).ok()
    }

    /// Appends one record's values to their columns, or `None` if it is not for the fast
    /// path. Returns the columns it had a key for, by bit (the others get no value).
    fn read(&self, record: &str, columns: &mut [FlatColumn]) -> Option<u64> {
        let mut at = Cursor { text: record, at: 0 };
        at.skip_whitespace();
        at.expect(b'{')?;
        at.skip_whitespace();
        let mut seen = 0u64;
        // The column whose key usually comes next: records tend to keep one order.
        let mut next = 0;
        if at.peek() == Some(b'}') {
            at.at += 1;
        } else {
            loop {
                let column = at.known_key(&self.quoted, next);
                if column.is_none() {
                    // Another key (one with an escape may still name a column: given up).
                    at.string()?;
                }
                at.skip_whitespace();
                at.expect(b':')?;
                at.skip_whitespace();
                match column {
                    Some(c) => {
                        if seen & (1 << c) != 0 {
                            return None;
                        }
                        seen |= 1 << c;
                        at.value_into(&mut columns[c])?;
                        next = c + 1;
                    }
                    None => at.skip_scalar()?,
                }
                at.skip_whitespace();
                match at.next()? {
                    b',' => at.skip_whitespace(),
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        at.skip_whitespace();
        (at.at == record.len()).then_some(seen)
    }
}

/// A position in a record being read by [`FlatDecoder`].
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    /// JSON's whitespace, as arrow-json skips it.
    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    /// The column whose quoted key (see [`FlatDecoder::quoted`]) starts here, trying
    /// `first` before the others; the cursor moves past it.
    fn known_key(&mut self, keys: &[Vec<u8>], first: usize) -> Option<usize> {
        let rest = &self.text.as_bytes()[self.at..];
        let here = |c: &usize| rest.starts_with(&keys[*c]);
        let c = Some(first).filter(|&c| c < keys.len()).filter(here).or_else(|| (0..keys.len()).find(here))?;
        self.at += keys[c].len();
        Some(c)
    }

    /// A string without escapes, without its quotes.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let len = memchr::memchr2(b'"', b'\\', &self.text.as_bytes()[start..])?;
        self.at = start + len;
        // An escape is for the general path.
        self.expect(b'"')?;
        // Both ends are at ASCII quotes, so on character boundaries.
        Some(&self.text[start..start + len])
    }

    /// Reads a value of `column`'s kind (or `null`) and appends it to `column`.
    fn value_into(&mut self, column: &mut FlatColumn) -> Option<()> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            column.append_null();
            return Some(());
        }
        match column {
            FlatColumn::Int64(b) => b.append_value(self.integer()?),
            FlatColumn::Int32(b) => b.append_value(self.int32()?),
            FlatColumn::Boolean(b) => b.append_value(self.boolean()?),
            FlatColumn::Utf8(b) => b.append_value(self.string()?),
            FlatColumn::Utf8View(b) => b.append_value(self.string()?),
            // Read as a built column of its kind is, the value dropped.
            FlatColumn::Unread(kind, valid) => {
                match kind {
                    FlatType::Int64 => self.integer().map(drop)?,
                    FlatType::Int32 => self.int32().map(drop)?,
                    FlatType::Boolean => self.boolean().map(drop)?,
                    FlatType::Utf8 | FlatType::Utf8View => self.string().map(drop)?,
                }
                valid.append(true);
            }
        }
        Some(())
    }

    /// An integer that fits in 32 bits.
    fn int32(&mut self) -> Option<i32> {
        i32::try_from(self.integer()?).ok()
    }

    /// `true` or `false`.
    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal("true").map(|_| true),
            b'f' => self.literal("false").map(|_| false),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.at + word.len();
        (self.text.as_bytes().get(self.at..end)? == word.as_bytes()).then(|| self.at = end)
    }

    /// `-?(0|[1-9][0-9]*)` of at most 18 digits (no overflow), not followed by what
    /// would make it a longer number (a fraction, an exponent).
    fn integer(&mut self) -> Option<i64> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let start = self.at;
        let mut value: i64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            if self.at - start == 18 {
                return None;
            }
            value = value * 10 + i64::from(d - b'0');
            self.at += 1;
        }
        let digits = &self.text.as_bytes()[start..self.at];
        if digits.is_empty() || (digits[0] == b'0' && digits.len() > 1) || self.peek().is_some_and(is_number_byte) {
            return None;
        }
        Some(if negative { -value } else { value })
    }

    /// The value of a key that is not a column: a scalar, read as arrow-json would
    /// read it (a number token is not parsed at all, as arrow-json never parses it).
    fn skip_scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'n' => self.literal("null"),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'-' | b'0'..=b'9' => {
                while self.peek().is_some_and(is_number_byte) {
                    self.at += 1;
                }
                Some(())
            }
            _ => None,
        }
    }
}

/// The bytes arrow-json takes into a number token.
fn is_number_byte(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
}

impl Decoded {
    /// Moves the rows that have a reason out of the batch into the bad records.
    pub fn reject_rows(&mut self, reasons: Vec<Option<String>>) -> Result<()> {
        if reasons.iter().all(Option::is_none) {
            return Ok(());
        }
        let keep: Vec<bool> = reasons.iter().map(Option::is_none).collect();
        self.batch = filter_record_batch(&self.batch, &BooleanArray::from(keep))?;
        let mut rows = Vec::with_capacity(self.batch.num_rows());
        for (row, reason) in self.rows.iter().zip(reasons) {
            match reason {
                None => rows.push(*row),
                Some(reason) => self.bad.push((*row, reason)),
            }
        }
        self.rows = rows;
        self.bad.sort_by_key(|(i, _)| *i);
        Ok(())
    }
}

/// Whether `record`'s objects and arrays nest deeper than `max` levels (brackets
/// inside strings do not count). A record can nest no deeper than it is long, so
/// short records are not scanned.
pub fn nests_deeper_than(record: &[u8], max: usize) -> bool {
    // Each level opens with a bracket: a record with few of them (counted at memchr's
    // speed) cannot nest deep, and is not walked byte by byte.
    if record.len() <= max || memchr::memchr2_iter(b'{', b'[', record).count() <= max {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in record {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// The event times an event may have, in microseconds since the epoch: the years 0000
/// to 9999, as SQL's TIMESTAMP (Flink's range). Window ends, session gaps and watermarks
/// are computed from event times; outside this range that arithmetic could overflow.
pub const EVENT_TIMES: std::ops::RangeInclusive<i64> = -62_167_219_200_000_000..=253_402_300_799_999_999;

/// Parses an event time: epoch milliseconds (all digits), or ISO-8601 with or without
/// an offset (without one it is UTC). Returns microseconds since the epoch.
pub fn parse_timestamp_micros(text: &str) -> Result<i64, String> {
    parse_timestamp_micros_on(text, &mut None)
}

/// [`parse_timestamp_micros`], remembering in `day` the last date it read (see [`Day`]).
fn parse_timestamp_micros_on(text: &str, day: &mut Option<Day>) -> Result<i64, String> {
    // The shape on every event first: this runs once per event. Its four-digit years
    // keep it inside `EVENT_TIMES`.
    if let Some(micros) = parse_plain_iso_on(text, day) {
        return Ok(micros);
    }
    let t = text.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let out_of_range = || format!("epoch milliseconds {t:?} out of range (the years 0000 to 9999)");
        let ms: i64 = t.parse().map_err(|_| out_of_range())?;
        return ms.checked_mul(1000).filter(|micros| EVENT_TIMES.contains(micros)).ok_or_else(out_of_range);
    }
    if let Some(micros) = parse_plain_iso_micros(t) {
        return Ok(micros);
    }
    string_to_timestamp_nanos(t)
        .map(|nanos| nanos.div_euclid(1000))
        .map_err(|_| format!("{t:?} is neither ISO-8601 nor epoch milliseconds"))
}

/// A date (`YYYY-MM-DD`, as written) and its days since the epoch. The events of a
/// batch mostly share their date, and reading and converting it was half the parsing.
type Day = ([u8; 10], i64);

/// The common shape, `YYYY-MM-DDTHH:MM:SS[.f…]` without offset (UTC), parsed by hand:
/// it is on every event. Anything else returns `None` for the general parser.
fn parse_plain_iso_micros(t: &str) -> Option<i64> {
    parse_plain_iso_on(t, &mut None)
}

/// [`parse_plain_iso_micros`], taking the date's days from `day` when the date is the
/// one there, and leaving there the date it read.
fn parse_plain_iso_on(t: &str, day: &mut Option<Day>) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let days = match day {
        Some((date, days)) if date[..] == b[..10] => *days,
        _ => {
            let days = days_of_date(b)?;
            *day = Some((b[..10].try_into().ok()?, days));
            days
        }
    };
    let (hour, minute, second) = (two_digits(b, 11)?, two_digits(b, 14)?, two_digits(b, 17)?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut micros = 0;
    match b.len() {
        19 => {}
        // Microseconds, the usual fraction: its digits two by two.
        26 if b[19] == b'.' => micros = two_digits(b, 20)? * 10_000 + two_digits(b, 22)? * 100 + two_digits(b, 24)?,
        // A fraction of 1 to 9 digits; microseconds keep its first 6.
        n @ 21..=29 if b[19] == b'.' => {
            for (i, &c) in b.iter().enumerate().skip(20) {
                let d = c.wrapping_sub(b'0');
                if d >= 10 {
                    return None;
                }
                if i < 26 {
                    micros = micros * 10 + i64::from(d);
                }
            }
            for _ in n.min(26)..26 {
                micros *= 10;
            }
        }
        _ => return None,
    }
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second) * 1_000_000) + micros)
}

/// Days since the epoch of the valid date `YYYY-MM-DD` at the start of `b`.
fn days_of_date(b: &[u8]) -> Option<i64> {
    let (year, month, day) = (two_digits(b, 0)? * 100 + two_digits(b, 2)?, two_digits(b, 5)?, two_digits(b, 8)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

/// The number of the two decimal digits at `b[i..i + 2]`. Inlined: closures and calls
/// here showed up as a tenth of the timestamp parsing, which runs once per event.
#[inline(always)]
fn two_digits(b: &[u8], i: usize) -> Option<i64> {
    let (tens, ones) = (b[i].wrapping_sub(b'0'), b[i + 1].wrapping_sub(b'0'));
    (tens < 10 && ones < 10).then_some(i64::from(tens) * 10 + i64::from(ones))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, TimestampMicrosecondArray};

    async fn decoder() -> JsonDecoder {
        JsonDecoder::new(&SourceSchema::default_interactions().await.unwrap(), 200)
    }

    fn micros(iso: &str) -> i64 {
        parse_timestamp_micros(iso).unwrap()
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_parser() {
        for text in [
            "2026-11-22T14:03:07.123456",
            "2026-11-22 14:03:07",
            "2024-02-29T23:59:59.9",
            "1970-01-01T00:00:00.000001",
            "1969-12-31T23:59:59.999999",
            "2000-03-01T00:00:00.123456789",
        ] {
            let general = string_to_timestamp_nanos(text).unwrap().div_euclid(1000);
            assert_eq!(parse_plain_iso_micros(text), Some(general), "{text}");
        }
        for text in [
            "2026-02-30T00:00:00",
            "2026-11-22T24:00:00",
            "2026-11-22T14:03:07Z",
            "2026-11-22T14:03:07.",
            "2026-1-22T14:03:07",
        ] {
            assert_eq!(parse_plain_iso_micros(text), None, "{text}");
        }
    }

    #[test]
    fn a_remembered_date_gives_what_parsing_it_again_gives() {
        let mut day = None;
        for text in [
            "2026-11-22T14:03:07.123456",
            "2026-11-22 23:59:59",
            "2026-11-22T24:00:00",
            "2026-11-23T00:00:00.5",
            "2026-02-30T00:00:00",
            "2026-11-23T00:00:00Z",
            "2026-11-23T00:00:01",
        ] {
            assert_eq!(parse_plain_iso_on(text, &mut day), parse_plain_iso_micros(text), "{text}");
        }
        assert_eq!(day.map(|(date, _)| date), Some(*b"2026-11-23"));
    }

    #[test]
    fn timestamps_parse_as_iso_with_or_without_offset_and_as_epoch_ms() {
        let utc = micros("2026-11-22T14:03:07.123456");
        assert_eq!(micros("2026-11-22T14:03:07.123456Z"), utc);
        assert_eq!(micros("2026-11-22T15:03:07.123456+01:00"), utc);
        assert_eq!(micros("1795356187123"), (utc / 1000) * 1000);
        assert!(parse_timestamp_micros("yesterday").unwrap_err().contains("yesterday"));
    }

    #[test]
    fn event_times_are_within_the_years_0000_to_9999() {
        assert_eq!(micros("0000-01-01T00:00:00"), *EVENT_TIMES.start());
        assert_eq!(micros("9999-12-31T23:59:59.999999"), *EVENT_TIMES.end());
        assert_eq!(micros("253402300799999"), *EVENT_TIMES.end() - 999);
        assert_eq!(micros("-62167219200000"), *EVENT_TIMES.start());
        // Epoch milliseconds can say more: near the ends of 64 bits, window arithmetic overflowed.
        for beyond in ["253402300800000", "-62167219200001", "9223372036854775", "-9223372036854775"] {
            let error = parse_timestamp_micros(beyond).unwrap_err();
            assert!(error.contains("out of range (the years 0000 to 9999)"), "{beyond}: {error}");
        }
    }

    /// The fast path reads a record to what arrow-json reads (or leaves it to arrow-json).
    fn check_flat_path(decoder: &JsonDecoder, record: &str) -> Result<bool, String> {
        let flat = decoder.flat.as_ref().expect("the interactions schema has a fast path");
        let Some(fast) = flat.decode(&decoder.decode_schema, &[record]) else {
            return Ok(false);
        };
        match decoder.decode_all(&[record.as_bytes()], &[0]) {
            Ok(general) if general == fast => Ok(true),
            Ok(general) => Err(format!("{record:?}: fast path {fast:?}, arrow-json {general:?}")),
            Err(e) => Err(format!("{record:?}: the fast path read what arrow-json rejects ({e})")),
        }
    }

    #[tokio::test]
    async fn the_flat_path_reads_what_arrow_json_reads_or_leaves_it() {
        let decoder = decoder().await;
        let taken = [
            r#"{"user_id": 1, "item_id": 2, "interaction_type": "view", "timestamp": "2026-11-22T14:00:00"}"#,
            r#" {"timestamp":"x","interaction_type":"","item_id":-0,"user_id":-999999999999999999} "#,
            "{\t\"user_id\"\r:\n1 ,\"other\": [1] }",
            r#"{"user_id": null, "extra": "é", "n": -1.5e+3, "t": true, "f": false, "z": null}"#,
            "{\"interaction_type\": \"a\u{1}b ü\"}",
            "{}",
        ];
        let left = [
            r#"{"user_id": 1, "user_id": 2}"#,
            r#"{"user_id": 1.0}"#,
            r#"{"user_id": 1e3}"#,
            r#"{"user_id": 01}"#,
            r#"{"user_id": 1234567890123456789}"#,
            r#"{"user_id": "1"}"#,
            r#"{"interaction_type": 7}"#,
            r#"{"interaction_type": "a\"b"}"#,
            r#"{"us\u0065r_id": 1}"#,
            r#"{"user_id": 1,}"#,
            r#"{"user_id": 1 "item_id": 2}"#,
            r#"{"user_id": 1} {"user_id": 2}"#,
            r#"{"user_id": 1"#,
            r#"{"x": {"a": 1}}"#,
            r#"[1]"#,
            "null",
            "",
        ];
        // `{"other": [1]}` is nested: that one is left too.
        for record in taken.iter().filter(|r| !r.contains('[')) {
            assert_eq!(check_flat_path(&decoder, record), Ok(true), "{record}");
        }
        for record in left.iter().chain(taken.iter().filter(|r| r.contains('['))) {
            assert_eq!(check_flat_path(&decoder, record), Ok(false), "{record}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_flat_path_agrees_with_arrow_json_on_arbitrary_flat_records(
            fields in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["user_id", "item_id", "interaction_type", "timestamp", "x", "User_id", ""]),
                    proptest::sample::select(vec![
                        "0", "-0", "7", "-12", "999999999999999999", "-999999999999999999", "1000000000000000000",
                        "1.5", "2e3", "-", "--1", "1-", "00", "null", "true", "false", "nul", "\"\"", "\"view\"",
                        "\"2026-11-22T14:00:00\"", "\"a\\\"b\"", "\"ü\"", "[]", "{}", "\"",
                    ]),
                    proptest::sample::select(vec!["", " ", "\n", "\t ", ","]),
                ),
                0..6,
            )
        ) {
            let mut record = String::from("{");
            for (i, (key, value, space)) in fields.iter().enumerate() {
                if i > 0 {
                    record.push(',');
                }
                record.push_str(&format!("{space}\"{key}\"{space}:{space}{value}{space}"));
            }
            record.push('}');
            let decoder = futures::executor::block_on(decoder());
            proptest::prop_assert!(check_flat_path(&decoder, &record).is_ok(), "{:?}", check_flat_path(&decoder, &record));
        }
    }

    #[tokio::test]
    async fn a_reused_decoder_gives_what_a_new_one_gives() {
        let good = |user: i64| {
            format!(r#"{{"user_id": {user}, "item_id": 2, "interaction_type": "view", "timestamp": 1795356187123}}"#)
        };
        let batches: Vec<Vec<String>> = vec![
            vec![good(1)],
            // Bigger than the decoder kept, then a record that fails mid-object.
            vec![good(2), good(3), good(4)],
            vec![good(5), r#"{"user_id": 6, "item_id": "#.to_string(), good(7)],
            vec![good(8), good(9)],
        ];
        let reused = decoder().await;
        for batch in &batches {
            let records: Vec<&[u8]> = batch.iter().map(|r| r.as_bytes()).collect();
            let again = reused.decode(&records).unwrap();
            let fresh = decoder().await.decode(&records).unwrap();
            assert_eq!(again.batch, fresh.batch);
            assert_eq!(again.rows, fresh.rows);
            assert_eq!(again.bad, fresh.bad);
        }
    }

    #[tokio::test]
    async fn columns_left_unread_keep_every_record_good_or_bad_as_before() {
        let schema = SourceSchema::parse(
            "CREATE TABLE t (id BIGINT NOT NULL, name VARCHAR NOT NULL, note VARCHAR, n INT, ok BOOLEAN, at TIMESTAMP NOT NULL)",
            "test",
        )
        .await
        .unwrap();
        let full = JsonDecoder::new(&schema, 1000);
        let mut partial = JsonDecoder::new(&schema, 1000);
        // `id` and `at` are read; the others only checked.
        partial.leave_unread(&[1, 2, 3, 4]);
        let batches: [&[&str]; 5] = [
            // The fast path: a missing required field, nulls, absent keys, another key.
            &[
                r#"{"id": 1, "name": "a", "note": "x", "n": 5, "ok": true, "at": "2026-01-01T00:00:00"}"#,
                r#"{"id": 2, "note": null, "at": "2026-01-01T00:00:01"}"#,
                r#"{"id": 3, "name": "c", "note": null, "n": null, "ok": false, "at": "2026-01-01T00:00:02"}"#,
                r#"{"id": 4, "name": null, "at": "2026-01-01T00:00:03"}"#,
                r#"{"id": 5, "name": "e", "other": 1.5, "at": "2026-01-01T00:00:04"}"#,
            ],
            // A value of the wrong kind in an unread column (each in a batch of its own):
            // the fast path gives up and arrow-json judges the batch, as without it.
            &[r#"{"id": 6, "name": "f", "n": "seven", "at": "2026-01-01T00:00:05"}"#],
            &[
                r#"{"id": 7, "name": "g", "n": 99999999999, "at": "2026-01-01T00:00:06"}"#,
                r#"{"id": 9, "name": "i", "at": "2026-01-01T00:00:08"}"#,
            ],
            &[r#"{"id": 8, "name": "h", "ok": 1, "at": "2026-01-01T00:00:07"}"#],
            &[r#"{"id": 10, "name": "j\"k", "note": "esc\u00e9", "at": "2026-01-01T00:00:09"}"#],
        ];
        for records in batches {
            let records: Vec<&[u8]> = records.iter().map(|r| r.as_bytes()).collect();
            let (a, b) = (full.decode(&records).unwrap(), partial.decode(&records).unwrap());
            assert_eq!(a.rows, b.rows, "{records:?}");
            assert_eq!(a.bad, b.bad, "{records:?}");
            assert_eq!(a.batch.schema(), b.batch.schema());
            for c in [0, 5] {
                assert_eq!(a.batch.column(c), b.batch.column(c), "column {c}");
            }
            for c in 1..5 {
                assert_eq!(a.batch.column(c).logical_nulls(), b.batch.column(c).logical_nulls(), "column {c}'s nulls");
            }
        }
        // The fast path really left them unread: placeholders, not the values.
        let records: Vec<&[u8]> = batches[0].iter().map(|r| r.as_bytes()).collect();
        let names = partial.decode(&records).unwrap().batch.column(1).clone();
        assert_eq!(datafusion::arrow::util::display::array_value_to_string(&names, 0).unwrap(), "");
    }

    #[tokio::test]
    async fn good_records_decode_in_order_and_each_bad_one_gets_a_reason() {
        let lines: Vec<&[u8]> = vec![
            br#"{"user_id": 1, "item_id": 2, "interaction_type": "view", "timestamp": "2026-11-22T14:00:00"}"#,
            br#"{"user_id": 1, "item_id": 2, "interaction_type": "vi"#,
            br#"{"user_id": "abc", "item_id": 2, "interaction_type": "view", "timestamp": 1795356187123}"#,
            br#"{"item_id": 2, "interaction_type": "view", "timestamp": "2026-11-22T14:00:00"}"#,
            br#"{"user_id": 3, "item_id": 2, "interaction_type": "view", "timestamp": "noon"}"#,
            b"{\"user_id\": 4, \"item_id\": 2, \"interaction_type\": \"\xff\", \"timestamp\": 1}",
            &[b'x'; 300],
            br#"{"user_id": 5, "item_id": 6, "interaction_type": "click", "timestamp": 1795356187123, "extra": [1]}"#,
            br#"[1, 2]"#,
        ];
        let d = decoder().await.decode(&lines).unwrap();
        assert_eq!(d.rows, [0, 7]);
        let users = d.batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(users.values(), &[1, 5]);
        let ts = d.batch.column(3).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        assert_eq!(ts.value(1), 1_795_356_187_123_000);
        let bad: Vec<usize> = d.bad.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, [1, 2, 3, 4, 5, 6, 8]);
        let reason = |i: usize| d.bad.iter().find(|(j, _)| *j == i).unwrap().1.clone();
        assert!(reason(3).contains("missing required field `user_id`"), "{}", reason(3));
        assert!(reason(4).contains("noon"), "{}", reason(4));
        assert!(reason(5).contains("UTF-8"), "{}", reason(5));
        assert!(reason(6).contains("exceeds the limit"), "{}", reason(6));
    }
}
