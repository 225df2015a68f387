//! Everything a command that pushes records through the pipeline needs, opened once.

use std::sync::Arc;
use std::time::Duration;

use ledgerflow_codec::{Decoder, DecoderConfig, RegistryClient};
use ledgerflow_store::{ErasedConsumer, Store};
use ledgerflow_tenants::TenantRegistry;

use crate::{ConsumerKind, ServiceError, Settings};

/// Opens the store at `url` (its own schema applied), naming the URL, password redacted, on
/// failure.
pub async fn open_store(url: &str) -> Result<Store, ServiceError> {
    Store::open(url).await.map_err(ServiceError::store(format!(
        "opening the store {}",
        ledgerflow_store::redact(url)
    )))
}

/// Settings, store, decoder and tenant registry.
pub struct Pipeline {
    /// The validated settings.
    pub settings: Settings,
    /// The store of record.
    pub store: Store,
    /// The decoder (registry client and schema cache).
    pub decoder: Arc<Decoder>,
    /// The tenant registry, loaded once (`serve` watches it for changes).
    pub tenants: TenantRegistry,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Opens the store, the registry client and the tenants file the settings name.
    pub async fn open(settings: Settings) -> Result<Self, ServiceError> {
        let store = open_store(&settings.database).await?;
        let client = RegistryClient::new(&settings.registry, Duration::from_secs(10))
            .map_err(ServiceError::Config)?
            .with_auth(settings.registry_auth.clone());
        let decoder = Arc::new(Decoder::new(client, DecoderConfig::default()));
        let tenants = match &settings.tenants {
            Some(path) => TenantRegistry::load(path).map_err(|source| ServiceError::Tenants {
                path: path.clone(),
                source,
            })?,
            None => {
                tracing::warn!(
                    "no tenants file: every event will be dead-lettered as unknown_tenant"
                );
                TenantRegistry::empty()
            }
        };
        Ok(Self {
            settings,
            store,
            decoder,
            tenants,
        })
    }

    /// A consumer's logic, its schema applied.
    pub async fn consumer(
        &self,
        kind: ConsumerKind,
    ) -> Result<Arc<dyn ErasedConsumer>, ServiceError> {
        let logic = kind.logic();
        self.store
            .apply_schema(&logic.schema(self.store.backend()))
            .await
            .map_err(ServiceError::store(format!("schema of {kind}")))?;
        Ok(logic)
    }
}
