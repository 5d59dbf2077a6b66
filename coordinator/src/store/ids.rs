//! Numeric ids for what results repeat: target URLs and names (regions, agents) are interned into
//! `u32`s, so a result's key is fixed-width integers. An id is never reused: one is taken per URL or
//! name ever stored (a few bytes each), and its rows age out under it.

use redb::{ReadableTable, Table};

use super::db::{StoreError, corrupt};

pub(super) const HOUR_MS: i64 = 3_600_000;
pub(super) const DAY_MS: i64 = 86_400_000;

/// The id of `name` in `ids` (name → id) and `names` (id → name), taking the next one if it has
/// none yet.
pub(super) fn intern(
    ids: &mut Table<'_, &'static str, u32>,
    names: &mut Table<'_, u32, &'static str>,
    name: &str,
) -> Result<u32, StoreError> {
    if let Some(id) = ids.get(name)? {
        return Ok(id.value());
    }
    let next = match names.last()? {
        Some((id, _)) => id.value().checked_add(1).ok_or_else(|| corrupt("no ids left"))?,
        None => 0,
    };
    ids.insert(name, next)?;
    names.insert(next, name)?;
    Ok(next)
}
