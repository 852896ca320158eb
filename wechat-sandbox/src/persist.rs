//! The sandbox's memory on disk (`state_file`, a SQLite database): a snapshot of what WeChat
//! would remember (tokens and tickets, s_pappids, authorization links and orders, templates,
//! uploaded PDFs and images, card packages, the payers' messages, the push log, the clock),
//! written about a second after a change and at stop, read at start. Call statistics, faults,
//! quotas and push settings start over with each run.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::push::PushRecord;
use crate::world::{
    AuthLink, CardBill, Image, IssuedToken, Media, OrderKey, OrderState, PayerMessage, SpApp, Template, Ticket, World,
};

/// How often the saver looks for changes.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Serialize, Deserialize)]
struct Snapshot {
    clock_offset: i64,
    tokens: Vec<(String, IssuedToken)>,
    stable_tokens: Vec<(String, String)>,
    tickets: Vec<(String, Ticket)>,
    sp_apps: Vec<(String, SpApp)>,
    links: Vec<AuthLink>,
    orders: Vec<(OrderKey, OrderState)>,
    templates: Vec<Template>,
    media: Vec<(String, Media)>,
    images: Vec<(String, Image)>,
    pdf_links: Vec<(String, (String, i64))>,
    bills: Vec<CardBill>,
    messages: Vec<PayerMessage>,
    pushes: Vec<PushRecord>,
}

fn entries<K: Clone, V: Clone>(map: &std::collections::HashMap<K, V>) -> Vec<(K, V)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl Snapshot {
    fn of(world: &World, clock_offset: i64) -> Self {
        Snapshot {
            clock_offset,
            tokens: entries(&world.tokens),
            stable_tokens: entries(&world.stable_tokens),
            tickets: entries(&world.tickets),
            sp_apps: entries(&world.sp_apps),
            links: world.links.values().cloned().collect(),
            orders: entries(&world.orders),
            templates: world.templates.values().cloned().collect(),
            media: entries(&world.media),
            images: entries(&world.images),
            pdf_links: entries(&world.pdf_links),
            bills: world.bills.all().to_vec(),
            messages: world.messages.clone(),
            pushes: world.pushes.clone(),
        }
    }

    /// Puts the snapshot into `world` (whose accounts come from the configuration); returns
    /// the clock offset.
    fn restore(self, world: &mut World) -> i64 {
        world.tokens = self.tokens.into_iter().collect();
        world.stable_tokens = self.stable_tokens.into_iter().collect();
        world.tickets = self.tickets.into_iter().collect();
        world.sp_apps = self.sp_apps.into_iter().collect();
        world.links = self.links.into_iter().map(|link| (link.id.clone(), link)).collect();
        world.orders = self.orders.into_iter().collect();
        world.templates = self.templates.into_iter().map(|t| (t.card_id.clone(), t)).collect();
        world.media = self.media.into_iter().collect();
        world.images = self.images.into_iter().collect();
        world.pdf_links = self.pdf_links.into_iter().collect();
        for bill in self.bills {
            world.bills.push(bill);
        }
        world.messages = self.messages;
        // A delivery cut short by the stop is not resumed.
        world.pushes = self.pushes.into_iter().map(|push| PushRecord { finished: true, ..push }).collect();
        self.clock_offset
    }
}

/// The state file.
pub struct StateFile {
    pool: SqlitePool,
}

impl StateFile {
    /// Opens (creating) the state file.
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
        }
        let options = SqliteConnectOptions::new().filename(path).create_if_missing(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), saved_at INTEGER NOT NULL, world TEXT NOT NULL)",
        )
        .execute(&pool)
        .await?;
        Ok(Self { pool })
    }

    /// Restores the last snapshot into `world`; the clock offset, or None when there was none.
    pub async fn load(&self, world: &mut World) -> Result<Option<i64>, String> {
        let row: Option<(String,)> = sqlx::query_as("SELECT world FROM snapshot WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        let Some((json,)) = row else { return Ok(None) };
        let snapshot: Snapshot =
            serde_json::from_str(&json).map_err(|e| format!("the saved state is unreadable: {e}"))?;
        Ok(Some(snapshot.restore(world)))
    }

    /// The JSON of a snapshot, taken under the world's lock and written after it.
    pub fn snapshot_json(world: &World, clock_offset: i64) -> String {
        serde_json::to_string(&Snapshot::of(world, clock_offset)).expect("the world serializes")
    }

    /// Writes a snapshot's JSON.
    pub async fn write(&self, json: String, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO snapshot (id, saved_at, world) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET saved_at = excluded.saved_at, world = excluded.world",
        )
        .bind(now)
        .bind(json)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `Bytes` as base64 in JSON.
pub mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map(Bytes::from).map_err(serde::de::Error::custom)
    }
}
