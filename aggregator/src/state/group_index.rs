//! Group keys → dense group ids, the index of a columnar state.
//!
//! Keys are kept in arrow's row format (any key types, compared as bytes) in one
//! arena, and found through a hash table of ids: the key's row bytes plus about 15
//! bytes per group (offset, liveness, table slot), and no allocation per group. Ids are dense (0, 1, 2 …) so that
//! the state of a group is a position in the state's columns.
//!
//! DataFusion's own `GroupValues` is the same idea but can only hand its keys back by
//! emitting (and dropping) all or the first n of them; a streaming state must also
//! look keys up, read back the keys of the groups a checkpoint saves and remove the
//! groups of closed windows. Removed ids stay unused until [`GroupIndex::compact`]
//! renumbers the live ones, once as many are dead as alive.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::FieldRef;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use hashbrown::HashTable;
use std::hash::BuildHasher;

use crate::error::Result;

/// A group's number in its state.
pub type GroupId = u32;

pub struct GroupIndex {
    /// `None` for an aggregation without GROUP BY: every row is the one group.
    converter: Option<RowConverter>,
    arena: Vec<u8>,
    /// The key of `id` is `arena[offsets[id]..offsets[id + 1]]`.
    offsets: Vec<usize>,
    /// Whether each id is a live group (removed ones stay until compaction).
    live_ids: Vec<bool>,
    table: HashTable<GroupId>,
    hasher: hashbrown::DefaultHashBuilder,
    live: usize,
}

impl GroupIndex {
    pub fn new(key_fields: &[FieldRef]) -> Result<Self> {
        let converter = match key_fields.is_empty() {
            true => None,
            false => {
                Some(RowConverter::new(key_fields.iter().map(|f| SortField::new(f.data_type().clone())).collect())?)
            }
        };
        Ok(GroupIndex {
            converter,
            arena: Vec::new(),
            offsets: vec![0],
            live_ids: Vec::new(),
            table: HashTable::new(),
            hasher: Default::default(),
            live: 0,
        })
    }

    /// Number of live groups.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// One more than the largest id handed out (live or removed).
    pub fn id_bound(&self) -> usize {
        self.live_ids.len()
    }

    pub fn is_live(&self, id: GroupId) -> bool {
        self.live_ids.get(id as usize).copied().unwrap_or(false)
    }

    /// Live ids in increasing order.
    pub fn live_ids(&self) -> impl Iterator<Item = GroupId> + '_ {
        (0..self.live_ids.len()).filter(|&i| self.live_ids[i]).map(|i| i as GroupId)
    }

    /// Bytes held (arena, offsets and table).
    pub fn size(&self) -> usize {
        self.arena.capacity()
            + self.offsets.capacity() * size_of::<usize>()
            + self.live_ids.capacity()
            + self.table.capacity() * (size_of::<GroupId>() + 1)
    }

    /// The keys of `columns` (all of the same length `rows`), in row format.
    pub fn rows(&self, columns: &[ArrayRef], rows: usize) -> Result<KeyRows> {
        Ok(match &self.converter {
            Some(converter) => KeyRows::Rows(converter.convert_columns(columns)?),
            None => KeyRows::Empty(rows),
        })
    }

    fn key(&self, id: GroupId) -> &[u8] {
        key_in(&self.arena, &self.offsets, id)
    }

    /// The id of `key`, if it is a live group.
    pub fn find(&self, key: &[u8]) -> Option<GroupId> {
        let hash = self.hasher.hash_one(key);
        self.table.find(hash, |&id| self.key(id) == key).copied()
    }

    /// The id of `key`, adding a group for it if there is none; `true` if added.
    pub fn intern(&mut self, key: &[u8]) -> (GroupId, bool) {
        let hash = self.hasher.hash_one(key);
        let (arena, offsets) = (&self.arena, &self.offsets);
        if let Some(&id) = self.table.find(hash, |&id| key_in(arena, offsets, id) == key) {
            return (id, false);
        }
        let id = GroupId::try_from(self.live_ids.len()).expect("fewer than 4 billion groups");
        self.arena.extend_from_slice(key);
        self.offsets.push(self.arena.len());
        self.live_ids.push(true);
        let (arena, offsets, hasher) = (&self.arena, &self.offsets, &self.hasher);
        self.table.insert_unique(hash, id, |&id| hasher.hash_one(key_in(arena, offsets, id)));
        self.live += 1;
        (id, true)
    }

    /// Removes a live group (its id is not reused until [`Self::compact`]).
    pub fn remove(&mut self, id: GroupId) {
        if !self.is_live(id) {
            return;
        }
        let hash = self.hasher.hash_one(self.key(id));
        if let Ok(entry) = self.table.find_entry(hash, |&other| other == id) {
            entry.remove();
        }
        self.live_ids[id as usize] = false;
        self.live -= 1;
    }

    /// The key columns of `ids` (live ones), as arrays.
    pub fn columns(&self, ids: &[GroupId]) -> Result<Vec<ArrayRef>> {
        let Some(converter) = &self.converter else { return Ok(Vec::new()) };
        let parser = converter.parser();
        Ok(converter.convert_rows(ids.iter().map(|&id| parser.parse(self.key(id))))?)
    }

    /// The row-format key of a live group (for checkpoints of removed keys).
    pub fn key_bytes(&self, id: GroupId) -> Box<[u8]> {
        self.key(id).into()
    }

    /// Key columns from row-format keys (as saved for removed groups).
    pub fn columns_of_keys<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) -> Result<Vec<ArrayRef>> {
        let Some(converter) = &self.converter else { return Ok(Vec::new()) };
        let parser = converter.parser();
        Ok(converter.convert_rows(keys.map(|k| parser.parse(k)))?)
    }

    /// Renumbers the live groups 0, 1, 2 … (in their order) once at least as many ids
    /// are dead as alive, to give the space of removed groups back. Returns the new id
    /// of each old id (`None` for removed ones), or `None` when nothing was done.
    pub fn compact(&mut self) -> Option<Vec<Option<GroupId>>> {
        let dead = self.live_ids.len() - self.live;
        if dead < 1024 || dead < self.live {
            return None;
        }
        let mut mapping = vec![None; self.live_ids.len()];
        let mut arena = Vec::with_capacity(self.arena.len() / 2);
        let mut offsets = Vec::with_capacity(self.live + 1);
        offsets.push(0);
        for (old, new) in self.live_ids().zip(0..) {
            arena.extend_from_slice(self.key(old));
            offsets.push(arena.len());
            mapping[old as usize] = Some(new);
        }
        self.arena = arena;
        self.offsets = offsets;
        self.live_ids = vec![true; self.live];
        let mut table = HashTable::with_capacity(self.live);
        let (arena, offsets, hasher) = (&self.arena, &self.offsets, &self.hasher);
        for id in 0..self.live as GroupId {
            let hash = hasher.hash_one(key_in(arena, offsets, id));
            table.insert_unique(hash, id, |&id| hasher.hash_one(key_in(arena, offsets, id)));
        }
        self.table = table;
        Some(mapping)
    }
}

fn key_in<'a>(arena: &'a [u8], offsets: &[usize], id: GroupId) -> &'a [u8] {
    &arena[offsets[id as usize]..offsets[id as usize + 1]]
}

/// The keys of a batch's rows in row format (or, without GROUP BY, just a count).
pub enum KeyRows {
    Rows(Rows),
    Empty(usize),
}

impl KeyRows {
    pub fn len(&self) -> usize {
        match self {
            KeyRows::Rows(rows) => rows.num_rows(),
            KeyRows::Empty(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, row: usize) -> &[u8] {
        match self {
            KeyRows::Rows(rows) => rows.row(row).data(),
            KeyRows::Empty(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
    use std::sync::Arc;

    fn index() -> GroupIndex {
        GroupIndex::new(&[Arc::new(Field::new("k", DataType::Int64, true))]).unwrap()
    }

    fn keys(index: &GroupIndex, values: Vec<Option<i64>>) -> KeyRows {
        let n = values.len();
        index.rows(&[Arc::new(Int64Array::from(values)) as ArrayRef], n).unwrap()
    }

    #[test]
    fn equal_keys_get_one_id_and_ids_give_their_keys_back() {
        let mut index = index();
        let rows = keys(&index, vec![Some(7), None, Some(7), Some(-1)]);
        let ids: Vec<_> = (0..rows.len()).map(|r| index.intern(rows.get(r))).collect();
        assert_eq!(ids, [(0, true), (1, true), (0, false), (2, true)]);
        let back = index.columns(&[2, 1, 0]).unwrap();
        let back = back[0].as_primitive::<Int64Type>();
        assert_eq!(back.iter().collect::<Vec<_>>(), [Some(-1), None, Some(7)]);
        assert_eq!(index.find(rows.get(3)), Some(2));
    }

    #[test]
    fn removed_groups_are_not_found_and_compaction_renumbers_the_live_ones() {
        let mut index = index();
        let rows = keys(&index, (0..3000).map(Some).collect());
        for r in 0..rows.len() {
            index.intern(rows.get(r));
        }
        for id in 0..2000 {
            index.remove(id);
        }
        assert_eq!(index.len(), 1000);
        assert_eq!(index.find(rows.get(5)), None);
        let mapping = index.compact().expect("twice as many dead as live");
        assert_eq!(mapping[5], None);
        assert_eq!(mapping[2500], Some(500));
        assert_eq!(index.find(rows.get(2500)), Some(500));
        assert_eq!(index.id_bound(), 1000);
        // A removed key comes back as a new group.
        assert_eq!(index.intern(rows.get(5)), (1000, true));
    }

    #[test]
    fn without_group_by_every_row_is_the_one_group() {
        let mut index = GroupIndex::new(&[]).unwrap();
        let rows = index.rows(&[], 3).unwrap();
        let ids: Vec<_> = (0..3).map(|r| index.intern(rows.get(r)).0).collect();
        assert_eq!(ids, [0, 0, 0]);
        assert!(index.columns(&[0]).unwrap().is_empty());
    }
}
