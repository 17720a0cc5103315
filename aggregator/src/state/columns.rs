//! One state column of a columnar aggregate state: a value per group id.
//!
//! Fixed-width types (integers, floats, timestamps, decimals — the state of COUNT,
//! SUM, AVG, MIN, MAX, VAR …) are kept as their bytes in one buffer plus a validity
//! bit per group: exactly the arrow layout, so reading the touched groups is one
//! copy of their bytes. Other types (strings of MIN/MAX over text, booleans) keep a
//! `ScalarValue` per group; large per-group states (distinct sets, sketches) do not
//! come here at all (see `operators::aggregate`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayData, ArrayRef, BooleanBufferBuilder, make_array, new_null_array};
use datafusion::arrow::buffer::MutableBuffer;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;

use crate::error::Result;
use crate::state::group_index::GroupId;

pub enum StateColumn {
    Fixed(FixedWidth),
    Scalars { data_type: DataType, values: Vec<ScalarValue> },
}

pub struct FixedWidth {
    data_type: DataType,
    width: usize,
    bytes: Vec<u8>,
    validity: BooleanBufferBuilder,
}

impl StateColumn {
    pub fn new(data_type: &DataType) -> Self {
        match data_type.primitive_width() {
            Some(width) if data_type.is_primitive() => StateColumn::Fixed(FixedWidth {
                data_type: data_type.clone(),
                width,
                bytes: Vec::new(),
                validity: BooleanBufferBuilder::new(0),
            }),
            _ => StateColumn::Scalars { data_type: data_type.clone(), values: Vec::new() },
        }
    }

    fn len(&self) -> usize {
        match self {
            StateColumn::Fixed(f) => f.validity.len(),
            StateColumn::Scalars { values, .. } => values.len(),
        }
    }

    /// Makes room for ids below `bound` (new groups start null).
    fn grow(&mut self, bound: usize) -> Result<()> {
        let missing = bound.saturating_sub(self.len());
        if missing == 0 {
            return Ok(());
        }
        match self {
            StateColumn::Fixed(f) => {
                f.bytes.resize(bound * f.width, 0);
                f.validity.append_n(missing, false);
            }
            StateColumn::Scalars { data_type, values } => {
                let null = ScalarValue::try_from(&*data_type)?;
                values.resize(bound, null);
            }
        }
        Ok(())
    }

    /// The values of `ids`, as an array.
    pub fn gather(&self, ids: &[GroupId]) -> Result<ArrayRef> {
        match self {
            StateColumn::Fixed(f) => {
                // Arrow's buffers are aligned for their type (a Vec<u8> is not).
                let mut bytes = MutableBuffer::with_capacity(ids.len() * f.width);
                let mut validity = BooleanBufferBuilder::new(ids.len());
                for &id in ids {
                    let at = id as usize * f.width;
                    bytes.extend_from_slice(&f.bytes[at..at + f.width]);
                    validity.append(f.validity.get_bit(id as usize));
                }
                let data = ArrayData::builder(f.data_type.clone())
                    .len(ids.len())
                    .add_buffer(bytes.into())
                    .null_bit_buffer(Some(validity.finish().into_inner()))
                    .build()?;
                Ok(make_array(data))
            }
            StateColumn::Scalars { data_type, values } => {
                if ids.is_empty() {
                    return Ok(new_null_array(data_type, 0));
                }
                Ok(ScalarValue::iter_to_array(ids.iter().map(|&id| values[id as usize].clone()))?)
            }
        }
    }

    /// Sets the values of `ids` to the rows of `array` (one row per id, in order).
    pub fn scatter(&mut self, ids: &[GroupId], array: &ArrayRef) -> Result<()> {
        if let Some(&max) = ids.iter().max() {
            self.grow(max as usize + 1)?;
        }
        match self {
            StateColumn::Fixed(f) => {
                let data = array.to_data();
                let values = &data.buffers()[0].as_slice()[data.offset() * f.width..];
                for (row, &id) in ids.iter().enumerate() {
                    let at = id as usize * f.width;
                    f.bytes[at..at + f.width].copy_from_slice(&values[row * f.width..(row + 1) * f.width]);
                    f.validity.set_bit(id as usize, array.is_valid(row));
                }
            }
            StateColumn::Scalars { values, .. } => {
                for (row, &id) in ids.iter().enumerate() {
                    values[id as usize] = ScalarValue::try_from_array(array, row)?;
                }
            }
        }
        Ok(())
    }

    /// Keeps the values of live ids only, renumbered as `mapping` says.
    pub fn compact(&mut self, mapping: &[Option<GroupId>]) -> Result<()> {
        let live: Vec<GroupId> = (0..mapping.len().min(self.len()))
            .filter(|&old| mapping[old].is_some())
            .map(|old| old as GroupId)
            .collect();
        let kept = self.gather(&live)?;
        let data_type = match self {
            StateColumn::Fixed(f) => f.data_type.clone(),
            StateColumn::Scalars { data_type, .. } => data_type.clone(),
        };
        *self = StateColumn::new(&data_type);
        let ids: Vec<GroupId> = live.iter().map(|&old| mapping[old as usize].expect("live")).collect();
        self.scatter(&ids, &kept)
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        match self {
            StateColumn::Fixed(f) => f.bytes.capacity() + f.validity.capacity() / 8,
            StateColumn::Scalars { values, .. } => values.iter().map(|v| v.size()).sum(),
        }
    }
}

/// A state array whose type may differ from the planned one (a value from another
/// accumulator kind): cast to `data_type`.
pub fn as_type(array: ArrayRef, data_type: &DataType) -> Result<ArrayRef> {
    Ok(if array.data_type() == data_type {
        array
    } else {
        Arc::new(datafusion::arrow::compute::cast(&array, data_type)?) as ArrayRef
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Int64Type;

    #[test]
    fn fixed_width_values_scatter_and_gather_back_with_their_nulls() {
        let mut column = StateColumn::new(&DataType::Int64);
        column.scatter(&[3, 0], &(Arc::new(Int64Array::from(vec![Some(30), None])) as ArrayRef)).unwrap();
        column.scatter(&[1], &(Arc::new(Int64Array::from(vec![11]).slice(0, 1)) as ArrayRef)).unwrap();
        let back = column.gather(&[0, 1, 2, 3]).unwrap();
        assert_eq!(back.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(), [None, Some(11), None, Some(30)]);
        column.compact(&[None, Some(1), None, Some(0)]).unwrap();
        let back = column.gather(&[0, 1]).unwrap();
        assert_eq!(back.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(), [Some(30), Some(11)]);
    }

    #[test]
    fn a_sliced_array_scatters_from_its_offset() {
        let mut column = StateColumn::new(&DataType::Int64);
        let array: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]).slice(1, 2));
        column.scatter(&[0, 1], &array).unwrap();
        let back = column.gather(&[0, 1]).unwrap();
        assert_eq!(back.as_primitive::<Int64Type>().values().to_vec(), [2, 3]);
    }

    #[test]
    fn other_types_keep_a_value_per_group() {
        let mut column = StateColumn::new(&DataType::Utf8);
        column.scatter(&[1], &(Arc::new(StringArray::from(vec!["b"])) as ArrayRef)).unwrap();
        let back = column.gather(&[0, 1]).unwrap();
        assert_eq!(back.as_string::<i32>().iter().collect::<Vec<_>>(), [None, Some("b")]);
    }
}
