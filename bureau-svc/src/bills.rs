//! Reading bills: one, a page of them, and how many are in each state.

use fiscalbill_common::paging::{Page, fetch_page};

use crate::domain::{Bill, BillKey, BillQuery};
use crate::error::BureauError;
use crate::store::Store;

pub struct Bills {
    store: Store,
}

impl Bills {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// GetBill.
    pub async fn get(&self, key: &BillKey) -> Result<Bill, BureauError> {
        self.store.bill(key).await?.ok_or_else(|| BureauError::BillNotFound(key.clone()))
    }

    /// ListBills: newest first, after the query's cursor.
    pub async fn list(&self, query: &BillQuery) -> Result<Page<Bill>, BureauError> {
        let page = fetch_page(query.limit, |limit| async move {
            self.store.list_bills(&BillQuery { limit, ..query.clone() }).await
        })
        .await?;
        Ok(page)
    }

    /// Bills per state, for metrics.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>, BureauError> {
        Ok(self.store.count_by_state().await?)
    }
}
