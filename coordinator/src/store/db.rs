//! The database handle and its errors: the one redb file, and the first storage failure, which
//! the coordinator stops on. What is stored lives in the modules beside this one, one concern
//! each, as `impl Store` blocks.

use std::sync::RwLock;

use redb::{Database, ReadableDatabase};

// redb's errors are carried as text beside their kind (not as sources), so each is told once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(redb::DatabaseError),
    #[error("storage: {0}")]
    Storage(redb::StorageError),
    #[error("transaction: {0}")]
    Transaction(redb::TransactionError),
    #[error("table: {0}")]
    Table(redb::TableError),
    #[error("commit: {0}")]
    Commit(redb::CommitError),
    #[error("durability: {0}")]
    Durability(redb::SetDurabilityError),
    #[error("compaction: {0}")]
    Compaction(redb::CompactionError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
}

/// The coordinator's durable state; see the module documentation of `store` for what it holds.
pub struct Store {
    pub(super) db: Gate,
    /// The database file, for its size.
    pub(super) path: std::path::PathBuf,
    /// The first storage failure (an I/O error, a failed commit). redb refuses every later
    /// operation until the database is reopened, so the coordinator stops on it (see
    /// `Running::wait`) and its service manager starts it afresh.
    failed: std::sync::OnceLock<String>,
    failure: tokio::sync::Notify,
}

macro_rules! from_redb {
    ($($source:ty => $variant:ident),*) => {
        $(impl From<$source> for StoreError {
            fn from(e: $source) -> Self {
                StoreError::$variant(e)
            }
        })*
    };
}

from_redb!(
    redb::DatabaseError => Database,
    redb::StorageError => Storage,
    redb::TransactionError => Transaction,
    redb::TableError => Table,
    redb::CommitError => Commit,
    redb::SetDurabilityError => Durability,
    redb::CompactionError => Compaction
);

/// The database behind a lock that every transaction passes on its way in: compaction
/// (`compact`), which needs the database to itself, takes it exclusively, so transactions wait to
/// begin until it is over. Only the beginning is gated (a transaction is not tied to the lock):
/// compaction waits for those under way to end.
pub(crate) struct Gate(RwLock<Database>);

impl Gate {
    pub(super) fn new(db: Database) -> Gate {
        Gate(RwLock::new(db))
    }

    pub(super) fn begin_write(&self) -> Result<redb::WriteTransaction, redb::TransactionError> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).begin_write()
    }

    pub(super) fn begin_read(&self) -> Result<redb::ReadTransaction, redb::TransactionError> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).begin_read()
    }

    /// The database to itself, once every transaction begun before has ended.
    pub(super) fn exclusive(&self) -> std::sync::RwLockWriteGuard<'_, Database> {
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(super) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl Store {
    /// A store on a database whose tables are open.
    pub(super) fn new(db: Database, path: std::path::PathBuf) -> Store {
        Store { db: Gate::new(db), path, failed: std::sync::OnceLock::new(), failure: tokio::sync::Notify::new() }
    }

    /// Remembers `error` if it means the storage failed (not a refusal or a corrupt record), and
    /// wakes whoever waits in [`Store::failed`].
    pub fn note(&self, error: &StoreError) {
        if matches!(error, StoreError::Storage(_) | StoreError::Commit(_) | StoreError::Transaction(_))
            && self.failed.set(error.to_string()).is_ok()
        {
            tracing::error!(%error, "the store failed");
            self.failure.notify_waiters();
        }
    }

    /// The storage failure, if there was one.
    pub fn failure(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    /// Waits until the storage fails, and says how.
    pub async fn failed(&self) -> String {
        loop {
            let notified = self.failure.notified();
            if let Some(error) = self.failure() {
                return error.to_owned();
            }
            notified.await;
        }
    }

    /// Makes every commit so far durable (one empty synced commit): ends a housekeeping pass,
    /// whose steps do not sync, so its work is on disk even if no ingest commit follows.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.begin_write()?.commit()?;
        Ok(())
    }
}
