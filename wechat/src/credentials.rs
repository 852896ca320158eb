//! Access tokens and wx_card tickets, cached per appid.
//!
//! - stable_token by default (`cgi-bin/token` selectable), never with force_refresh;
//! - refreshed ahead of expiry, with exactly one refresh in flight per credential however many
//!   callers wait (single-flight in the process, a claim in the [`CredentialStore`] across
//!   replicas), and a growing pause after failed refreshes so an outage causes no storm;
//! - when WeChat rejects the token (kind `TokenRejected` in the rulebook) the token that failed
//!   is expired only if it is still current (compare-and-expire), then the call is retried
//!   exactly once. A quota answer never refreshes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

use crate::account::Account;
use crate::client::WechatClient;
use crate::clock::Clock;
use crate::error::WechatError;
use crate::secret::Secret;

/// How access tokens are fetched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenMode {
    /// `POST cgi-bin/stable_token`: the same token while valid; safe for several replicas.
    #[default]
    StableToken,
    /// `GET cgi-bin/token`: each fetch replaces the previous token after 5 minutes.
    Token,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialKind {
    AccessToken,
    CardTicket,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::AccessToken => "access_token",
            CredentialKind::CardTicket => "wx_card_ticket",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "access_token" => Some(CredentialKind::AccessToken),
            "wx_card_ticket" => Some(CredentialKind::CardTicket),
            _ => None,
        }
    }
}

/// One credential of one account.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialKey {
    pub kind: CredentialKind,
    pub appid: String,
}

impl CredentialKey {
    pub fn access_token(appid: &str) -> Self {
        Self { kind: CredentialKind::AccessToken, appid: appid.to_owned() }
    }

    pub fn card_ticket(appid: &str) -> Self {
        Self { kind: CredentialKind::CardTicket, appid: appid.to_owned() }
    }
}

/// A token or ticket with its timing, in Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub value: Secret,
    pub expires_at: i64,
    /// From this moment on the next caller refreshes it.
    pub refresh_at: i64,
}

/// Seconds before expiry at which a credential is not handed out any more: a call needs time.
const EXPIRY_GUARD_SECS: i64 = 5;
/// How long one replica may hold the refresh claim of a credential.
const CLAIM_SECS: i64 = 15;
const MAX_FAILURE_PAUSE: Duration = Duration::from_secs(30);

impl Credential {
    /// A credential WeChat issued `now` for `expires_in` seconds. It is refreshed when 5
    /// minutes remain (half its life for short ones): stable_token renews within its last 5
    /// minutes, so asking earlier would only return the same token.
    pub fn issued(value: Secret, now: i64, expires_in: i64) -> Self {
        let expires_in = expires_in.max(1);
        let margin = (expires_in / 2).min(300);
        Self { value, expires_at: now + expires_in, refresh_at: now + expires_in - margin }
    }

    /// Not due for refresh.
    pub fn is_fresh(&self, now: i64) -> bool {
        now < self.refresh_at && self.is_usable(now)
    }

    /// Still accepted by WeChat (with a guard for the call's own duration).
    pub fn is_usable(&self, now: i64) -> bool {
        now < self.expires_at - EXPIRY_GUARD_SECS
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("credential store: {0}")]
pub struct StoreError(pub String);

/// Where credentials are shared between the replicas of a service (its database), or kept in
/// memory for a single process.
#[async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    async fn load(&self, key: &CredentialKey) -> Result<Option<Credential>, StoreError>;
    async fn save(&self, key: &CredentialKey, credential: &Credential) -> Result<(), StoreError>;
    /// Removes the credential only if its value is still `value`.
    async fn expire_if_current(&self, key: &CredentialKey, value: &Secret) -> Result<(), StoreError>;
    /// Takes the right to refresh `key` until `until` unless another holder has it beyond
    /// `now`. True if `holder` has it now.
    async fn try_claim(&self, key: &CredentialKey, holder: &str, now: i64, until: i64) -> Result<bool, StoreError>;
    async fn release_claim(&self, key: &CredentialKey, holder: &str) -> Result<(), StoreError>;
}

/// A [`CredentialStore`] in process memory.
#[derive(Default)]
pub struct MemoryCredentialStore {
    entries: Mutex<HashMap<CredentialKey, MemoryEntry>>,
}

#[derive(Default)]
struct MemoryEntry {
    credential: Option<Credential>,
    claim: Option<(String, i64)>,
}

#[async_trait]
impl CredentialStore for MemoryCredentialStore {
    async fn load(&self, key: &CredentialKey) -> Result<Option<Credential>, StoreError> {
        Ok(self.entries.lock().unwrap().get(key).and_then(|e| e.credential.clone()))
    }

    async fn save(&self, key: &CredentialKey, credential: &Credential) -> Result<(), StoreError> {
        self.entries.lock().unwrap().entry(key.clone()).or_default().credential = Some(credential.clone());
        Ok(())
    }

    async fn expire_if_current(&self, key: &CredentialKey, value: &Secret) -> Result<(), StoreError> {
        if let Some(entry) = self.entries.lock().unwrap().get_mut(key)
            && entry.credential.as_ref().is_some_and(|c| &c.value == value)
        {
            entry.credential = None;
        }
        Ok(())
    }

    async fn try_claim(&self, key: &CredentialKey, holder: &str, now: i64, until: i64) -> Result<bool, StoreError> {
        let mut entries = self.entries.lock().unwrap();
        let entry = entries.entry(key.clone()).or_default();
        let free = match &entry.claim {
            None => true,
            Some((current, claimed_until)) => current == holder || *claimed_until <= now,
        };
        if free {
            entry.claim = Some((holder.to_owned(), until));
        }
        Ok(free)
    }

    async fn release_claim(&self, key: &CredentialKey, holder: &str) -> Result<(), StoreError> {
        if let Some(entry) = self.entries.lock().unwrap().get_mut(key)
            && entry.claim.as_ref().is_some_and(|(current, _)| current == holder)
        {
            entry.claim = None;
        }
        Ok(())
    }
}

/// Why a call that needs a credential failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Wechat(#[from] WechatError),
    #[error("no WeChat appsecret is configured for appid {0}")]
    UnknownAccount(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct CredentialStats {
    pub token_fetches: AtomicU64,
    pub ticket_fetches: AtomicU64,
    pub failed_fetches: AtomicU64,
    pub token_rejections: AtomicU64,
}

/// The token and ticket cache of a set of accounts.
pub struct Credentials {
    client: WechatClient,
    secrets: HashMap<String, Secret>,
    mode: TokenMode,
    store: Arc<dyn CredentialStore>,
    clock: Arc<dyn Clock>,
    /// Names this instance in refresh claims.
    holder: String,
    slots: Mutex<HashMap<CredentialKey, Arc<Slot>>>,
    stats: CredentialStats,
}

#[derive(Default)]
struct Slot {
    cached: Mutex<Option<Credential>>,
    /// Held while refreshing: the single flight.
    refresh: tokio::sync::Mutex<RefreshState>,
    /// Counts finished refresh attempts, so waiters know one ended while they queued.
    attempts: AtomicU64,
}

#[derive(Default)]
struct RefreshState {
    last_error: Option<CallError>,
    failures: u32,
    pause_until: Option<Instant>,
}

impl Slot {
    fn cached(&self) -> Option<Credential> {
        self.cached.lock().unwrap().clone()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Credentials {
    pub fn new(
        client: WechatClient,
        accounts: impl IntoIterator<Item = (String, Secret)>,
        mode: TokenMode,
        store: Arc<dyn CredentialStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            client,
            secrets: accounts.into_iter().collect(),
            mode,
            store,
            clock,
            holder: hex::encode(rand::random::<[u8; 8]>()),
            slots: Mutex::default(),
            stats: CredentialStats::default(),
        }
    }

    pub fn client(&self) -> &WechatClient {
        &self.client
    }

    pub fn stats(&self) -> &CredentialStats {
        &self.stats
    }

    pub fn has_account(&self, appid: &str) -> bool {
        self.secrets.contains_key(appid)
    }

    /// The account's current access token.
    pub async fn access_token(&self, appid: &str) -> Result<Credential, CallError> {
        self.get(&CredentialKey::access_token(appid)).await
    }

    /// The account's current wx_card ticket.
    pub async fn card_ticket(&self, appid: &str) -> Result<Credential, CallError> {
        self.get(&CredentialKey::card_ticket(appid)).await
    }

    /// The calls of one account, each with its access token (see [`Account`]).
    pub fn account<'a>(&'a self, appid: &'a str) -> Account<'a> {
        Account::new(self, appid)
    }

    /// Runs `call` with the account's access token. If WeChat rejects the token it is expired
    /// if still current and `call` runs once more with a fresh one; its second answer is
    /// final. [`Account`]'s methods are this around each endpoint.
    pub async fn with_access_token<T, F, Fut>(&self, appid: &str, call: F) -> Result<T, CallError>
    where
        F: Fn(Secret) -> Fut,
        Fut: Future<Output = Result<T, WechatError>>,
    {
        let token = self.access_token(appid).await?;
        match call(token.value.clone()).await {
            Err(error) if error.is_token_rejected() => {
                self.stats.token_rejections.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    appid,
                    errcode = error.errcode(),
                    rid = error.rid(),
                    "access token rejected; refreshing it and retrying once"
                );
                self.expire(&CredentialKey::access_token(appid), &token.value).await?;
                let fresh = self.access_token(appid).await?;
                Ok(call(fresh.value).await?)
            }
            other => Ok(other?),
        }
    }

    /// Compare-and-expire: forgets `value` for `key` here and in the store, unless a newer
    /// credential already replaced it.
    pub async fn expire(&self, key: &CredentialKey, value: &Secret) -> Result<(), CallError> {
        let slot = self.slot(key);
        {
            let mut cached = slot.cached.lock().unwrap();
            if cached.as_ref().is_some_and(|c| &c.value == value) {
                *cached = None;
            }
        }
        self.store.expire_if_current(key, value).await?;
        Ok(())
    }

    fn slot(&self, key: &CredentialKey) -> Arc<Slot> {
        self.slots.lock().unwrap().entry(key.clone()).or_default().clone()
    }

    fn get<'a>(&'a self, key: &'a CredentialKey) -> BoxFuture<'a, Result<Credential, CallError>> {
        Box::pin(async move {
            let slot = self.slot(key);
            if let Some(cached) = slot.cached().filter(|c| c.is_fresh(self.clock.now())) {
                return Ok(cached);
            }
            let attempts_seen = slot.attempts.load(Ordering::SeqCst);
            let mut state = slot.refresh.lock().await;
            let now = self.clock.now();
            let cached = slot.cached();
            if let Some(fresh) = cached.clone().filter(|c| c.is_fresh(now)) {
                return Ok(fresh);
            }
            let usable = cached.filter(|c| c.is_usable(now));
            // An attempt failed while we queued, or recently: share its outcome, don't repeat it.
            let ended_while_waiting = slot.attempts.load(Ordering::SeqCst) != attempts_seen;
            let pausing = state.pause_until.is_some_and(|until| Instant::now() < until);
            if let Some(error) = &state.last_error
                && (ended_while_waiting || pausing)
            {
                return usable.ok_or_else(|| error.clone());
            }

            let result = self.refresh(key, usable.is_some()).await;
            slot.attempts.fetch_add(1, Ordering::SeqCst);
            match result {
                Ok(credential) => {
                    *slot.cached.lock().unwrap() = Some(credential.clone());
                    *state = RefreshState::default();
                    Ok(credential)
                }
                Err(error) => {
                    self.stats.failed_fetches.fetch_add(1, Ordering::Relaxed);
                    state.failures += 1;
                    let pause = crate::backoff::jittered(Duration::from_millis(500), MAX_FAILURE_PAUSE, state.failures);
                    state.pause_until = Some(Instant::now() + pause);
                    state.last_error = Some(error.clone());
                    tracing::warn!(appid = %key.appid, kind = key.kind.as_str(), %error, "credential refresh failed");
                    usable.ok_or(error)
                }
            }
        })
    }

    /// Gets a new credential: from the store if another replica refreshed it, else from WeChat
    /// under the store's refresh claim.
    async fn refresh(&self, key: &CredentialKey, have_usable: bool) -> Result<Credential, CallError> {
        if let Some(stored) = self.store.load(key).await?.filter(|c| c.is_fresh(self.clock.now())) {
            return Ok(stored);
        }
        let now = self.clock.now();
        if !self.store.try_claim(key, &self.holder, now, now + CLAIM_SECS).await? {
            if have_usable {
                // Another replica is refreshing; the current one still works meanwhile.
                return Err(StoreError("another replica is refreshing this credential".to_owned()).into());
            }
            if let Some(stored) = self.wait_for_other_replica(key).await? {
                return Ok(stored);
            }
            let now = self.clock.now();
            if !self.store.try_claim(key, &self.holder, now, now + CLAIM_SECS).await? {
                return Err(StoreError("another replica holds the refresh claim".to_owned()).into());
            }
        }
        // Another replica may have refreshed between our load and our claim.
        let result = match self.store.load(key).await {
            Ok(Some(stored)) if stored.is_fresh(self.clock.now()) => Ok(stored),
            Ok(_) => match self.fetch(key).await {
                Ok(credential) => self.store.save(key, &credential).await.map(|()| credential).map_err(CallError::from),
                Err(error) => Err(error),
            },
            Err(error) => Err(error.into()),
        };
        if let Err(error) = self.store.release_claim(key, &self.holder).await {
            tracing::warn!(appid = %key.appid, %error, "could not release the refresh claim; it lapses by itself");
        }
        result
    }

    async fn wait_for_other_replica(&self, key: &CredentialKey) -> Result<Option<Credential>, CallError> {
        let deadline = Instant::now() + Duration::from_secs(CLAIM_SECS as u64);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(stored) = self.store.load(key).await?.filter(|c| c.is_fresh(self.clock.now())) {
                return Ok(Some(stored));
            }
        }
        Ok(None)
    }

    async fn fetch(&self, key: &CredentialKey) -> Result<Credential, CallError> {
        match key.kind {
            CredentialKind::AccessToken => {
                let secret =
                    self.secrets.get(&key.appid).ok_or_else(|| CallError::UnknownAccount(key.appid.clone()))?;
                self.stats.token_fetches.fetch_add(1, Ordering::Relaxed);
                let token = match self.mode {
                    TokenMode::StableToken => self.client.stable_token(&key.appid, secret, false).await?,
                    TokenMode::Token => self.client.token(&key.appid, secret).await?,
                };
                tracing::info!(appid = %key.appid, expires_in = token.expires_in, "fetched access token");
                Ok(Credential::issued(token.access_token, self.clock.now(), token.expires_in))
            }
            CredentialKind::CardTicket => {
                if !self.secrets.contains_key(&key.appid) {
                    return Err(CallError::UnknownAccount(key.appid.clone()));
                }
                self.stats.ticket_fetches.fetch_add(1, Ordering::Relaxed);
                let ticket = self.account(&key.appid).fetch_card_ticket().await?;
                tracing::info!(appid = %key.appid, expires_in = ticket.expires_in, "fetched wx_card ticket");
                Ok(Credential::issued(ticket.ticket, self.clock.now(), ticket.expires_in))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WechatHttpConfig;

    #[test]
    fn refresh_ahead_leaves_five_minutes_or_half_the_life() {
        let c = Credential::issued(Secret::new("t"), 1_000, 7_200);
        assert_eq!((c.expires_at, c.refresh_at), (8_200, 7_900));
        assert!(c.is_fresh(7_899) && !c.is_fresh(7_900) && c.is_usable(7_900));
        assert!(!c.is_usable(8_195));
        let short = Credential::issued(Secret::new("t"), 0, 300);
        assert_eq!(short.refresh_at, 150);
    }

    /// Hides the stored credential from the first load: as if another replica saved it just
    /// after this one looked.
    struct SavedMeanwhile {
        inner: MemoryCredentialStore,
        loads: AtomicU64,
    }

    #[async_trait]
    impl CredentialStore for SavedMeanwhile {
        async fn load(&self, key: &CredentialKey) -> Result<Option<Credential>, StoreError> {
            if self.loads.fetch_add(1, Ordering::SeqCst) == 0 {
                return Ok(None);
            }
            self.inner.load(key).await
        }
        async fn save(&self, key: &CredentialKey, credential: &Credential) -> Result<(), StoreError> {
            self.inner.save(key, credential).await
        }
        async fn expire_if_current(&self, key: &CredentialKey, value: &Secret) -> Result<(), StoreError> {
            self.inner.expire_if_current(key, value).await
        }
        async fn try_claim(&self, key: &CredentialKey, holder: &str, now: i64, until: i64) -> Result<bool, StoreError> {
            self.inner.try_claim(key, holder, now, until).await
        }
        async fn release_claim(&self, key: &CredentialKey, holder: &str) -> Result<(), StoreError> {
            self.inner.release_claim(key, holder).await
        }
    }

    #[tokio::test]
    async fn a_credential_saved_by_another_replica_before_the_claim_is_not_fetched_again() {
        let appid = "wx0000000000000001";
        let store = SavedMeanwhile { inner: MemoryCredentialStore::default(), loads: AtomicU64::new(0) };
        let theirs = Credential::issued(Secret::new("theirs"), crate::clock::unix_now(), 7_200);
        store.inner.save(&CredentialKey::access_token(appid), &theirs).await.unwrap();
        // Nothing listens there: a fetch would fail.
        let config =
            WechatHttpConfig { base_url: "http://127.0.0.1:9".to_owned(), max_resends: 0, ..Default::default() };
        let credentials = Credentials::new(
            WechatClient::new(&config).unwrap(),
            [(appid.to_owned(), Secret::new("s"))],
            TokenMode::StableToken,
            Arc::new(store),
            Arc::new(crate::clock::SystemClock),
        );
        let token = credentials.access_token(appid).await.unwrap();
        assert_eq!(token.value.expose(), "theirs");
        assert_eq!(credentials.stats().token_fetches.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn memory_store_compare_and_expire_and_claims() {
        let store = MemoryCredentialStore::default();
        let key = CredentialKey::access_token("wx0000000000000001");
        let cred = Credential::issued(Secret::new("a"), 0, 7_200);
        store.save(&key, &cred).await.unwrap();
        store.expire_if_current(&key, &Secret::new("b")).await.unwrap();
        assert_eq!(store.load(&key).await.unwrap(), Some(cred));
        store.expire_if_current(&key, &Secret::new("a")).await.unwrap();
        assert_eq!(store.load(&key).await.unwrap(), None);

        assert!(store.try_claim(&key, "r1", 100, 115).await.unwrap());
        assert!(!store.try_claim(&key, "r2", 110, 125).await.unwrap());
        assert!(store.try_claim(&key, "r2", 115, 130).await.unwrap(), "a lapsed claim is free");
        store.release_claim(&key, "r1").await.unwrap();
        assert!(!store.try_claim(&key, "r1", 120, 135).await.unwrap(), "only the holder releases");
        store.release_claim(&key, "r2").await.unwrap();
        assert!(store.try_claim(&key, "r1", 120, 135).await.unwrap());
    }
}
