//! The tenant registry: an immutable snapshot of validated tenants behind an [`ArcSwap`].
//!
//! Readers (every event the consumers handle) call [`TenantRegistry::get`], a lock-free load of
//! the current snapshot. A reload builds a complete new snapshot off to the side and swaps it in
//! whole, so a reader sees either the old tenants or the new ones, never a mix, and a file that
//! fails to parse or validate changes nothing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use ledgerflow_core::TenantId;

use crate::config::{TenantConfig, TenantsFile};
use crate::error::TenantsError;
use crate::validate::{TenantMap, base_dir, validate};

/// Version of the first snapshot of a registry built from tenants ([`TenantRegistry::empty`]
/// starts at 0).
const FIRST_VERSION: u64 = 1;

/// One consistent view of the tenants.
#[derive(Debug)]
struct Snapshot {
    /// Bumped each time a reload installs different tenants.
    version: u64,
    /// The tenants file, if the registry was loaded from one.
    path: Option<PathBuf>,
    tenants: TenantMap,
}

struct Inner {
    current: ArcSwap<Snapshot>,
    /// Serialises reloads (a SIGHUP and a manual reload at once) so versions never skip or
    /// repeat; readers never take it.
    reload_lock: Mutex<()>,
}

/// Tenant id -> [`TenantConfig`], hot-reloadable. Cheap to clone; clones share the snapshot.
#[derive(Clone)]
pub struct TenantRegistry {
    inner: Arc<Inner>,
}

impl fmt::Debug for TenantRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tenant configs hold only secret *references*, but a registry can hold thousands of
        // tenants: print the shape, not the contents.
        let snapshot = self.inner.current.load();
        f.debug_struct("TenantRegistry")
            .field("version", &snapshot.version)
            .field("path", &snapshot.path)
            .field("tenants", &snapshot.tenants.len())
            .finish()
    }
}

impl TenantRegistry {
    fn new(snapshot: Snapshot) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(snapshot),
                reload_lock: Mutex::new(()),
            }),
        }
    }

    /// Loads and validates a tenants file. Relative secret file paths are resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Self, TenantsError> {
        let tenants = read_tenants(path)?;
        Ok(Self::new(Snapshot {
            version: FIRST_VERSION,
            path: Some(path.to_owned()),
            tenants,
        }))
    }

    /// Validates tenants that did not come from a file (tests, embedding). Relative secret
    /// file paths stay relative to the working directory; [`TenantRegistry::reload`] fails
    /// with [`TenantsError::NoFile`].
    pub fn from_config(file: TenantsFile) -> Result<Self, TenantsError> {
        Ok(Self::new(Snapshot {
            version: FIRST_VERSION,
            path: None,
            tenants: validate(file, None)?,
        }))
    }

    /// A registry without tenants and without a file (version 0): every lookup misses.
    pub fn empty() -> Self {
        Self::new(Snapshot {
            version: 0,
            path: None,
            tenants: TenantMap::new(),
        })
    }

    /// The tenant's config in the current snapshot.
    pub fn get(&self, tenant: &TenantId) -> Option<Arc<TenantConfig>> {
        self.inner.current.load().tenants.get(tenant).cloned()
    }

    /// Version of the current snapshot: 1 after a load, +1 for every reload that installed
    /// changed tenants (a reload that finds the same tenants keeps the version).
    pub fn version(&self) -> u64 {
        self.inner.current.load().version
    }

    /// Tenant ids of the current snapshot, sorted.
    pub fn tenant_ids(&self) -> Vec<TenantId> {
        let mut ids: Vec<TenantId> = self.inner.current.load().tenants.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The tenants file, if the registry was loaded from one.
    pub fn path(&self) -> Option<PathBuf> {
        self.inner.current.load().path.clone()
    }

    /// Re-reads the tenants file. `Ok(true)` if the validated tenants differ from the current
    /// ones (the new snapshot is installed and the version bumped), `Ok(false)` if they are the
    /// same (comments or key order changed, or nothing). On error the current snapshot stays
    /// in force. Blocking file I/O: from async code call it on the blocking pool.
    pub fn reload(&self) -> Result<bool, TenantsError> {
        let _guard = self
            .inner
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.inner.current.load_full();
        let path = current.path.as_deref().ok_or(TenantsError::NoFile)?;
        let tenants = read_tenants(path)?;
        if tenants == current.tenants {
            return Ok(false);
        }
        self.inner.current.store(Arc::new(Snapshot {
            version: current.version + 1,
            path: current.path.clone(),
            tenants,
        }));
        Ok(true)
    }
}

fn read_tenants(path: &Path) -> Result<TenantMap, TenantsError> {
    let text = std::fs::read_to_string(path).map_err(|source| TenantsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file = TenantsFile::parse(&text, path)?;
    validate(file, Some(&base_dir(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretRef;
    use crate::fixtures::{FULL, minimal, write_atomically};

    fn tenant_id(raw: &str) -> TenantId {
        TenantId::parse(raw).unwrap()
    }

    #[test]
    fn loads_a_file_and_resolves_relative_secrets_against_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, FULL).unwrap();
        let registry = TenantRegistry::load(&path).unwrap();
        assert_eq!(registry.version(), 1);
        assert_eq!(registry.path(), Some(path.clone()));
        let ids: Vec<String> = registry
            .tenant_ids()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ids, ["acme", "globex", "initech", "soylent", "umbrella-01"]);
        let acme = registry.get(&tenant_id("acme")).unwrap();
        assert_eq!(
            acme.webhooks[0].secret,
            SecretRef::File {
                file: dir.path().join("secrets/acme-billing.whsec")
            }
        );
        assert!(registry.get(&tenant_id("nobody")).is_none());
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.toml");
        let err = TenantRegistry::load(&path).unwrap_err();
        assert!(matches!(err, TenantsError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.toml"), "{err}");

        std::fs::write(&path, "[[tenants]]\ntenant_id = 7\n").unwrap();
        let err = TenantRegistry::load(&path).unwrap_err();
        assert!(matches!(err, TenantsError::Parse { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.toml at line 2"), "{err}");
    }

    #[test]
    fn from_config_and_empty_do_not_reload() {
        let file = TenantsFile::parse(&minimal("acme"), Path::new("inline")).unwrap();
        let registry = TenantRegistry::from_config(file).unwrap();
        assert_eq!(registry.version(), 1);
        assert!(registry.get(&tenant_id("acme")).is_some());
        assert!(matches!(registry.reload(), Err(TenantsError::NoFile)));

        let empty = TenantRegistry::empty();
        assert_eq!(empty.version(), 0);
        assert!(empty.tenant_ids().is_empty());
        assert!(matches!(empty.reload(), Err(TenantsError::NoFile)));
    }

    #[test]
    fn from_config_validates() {
        let text = format!("{}{}", minimal("acme"), minimal("acme"));
        let file = TenantsFile::parse(&text, Path::new("inline")).unwrap();
        assert!(matches!(
            TenantRegistry::from_config(file),
            Err(TenantsError::DuplicateTenant { .. })
        ));
    }

    #[test]
    fn reload_swaps_the_snapshot_and_bumps_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, minimal("acme")).unwrap();
        let registry = TenantRegistry::load(&path).unwrap();
        let reader = registry.clone();
        let before = reader.get(&tenant_id("acme")).unwrap();

        // Same tenants, different text: nothing to swap.
        write_atomically(&path, &format!("# a comment\n{}", minimal("acme")));
        assert!(!registry.reload().unwrap());
        assert_eq!(reader.version(), 1);

        let edited = minimal("acme").replace("\"1200\"", "\"1201\"") + &minimal("globex");
        write_atomically(&path, &edited);
        assert!(registry.reload().unwrap());
        assert_eq!(reader.version(), 2, "clones share the snapshot");
        assert_eq!(
            reader.get(&tenant_id("acme")).unwrap().accounts.receivable,
            "1201"
        );
        assert!(reader.get(&tenant_id("globex")).is_some());
        assert_eq!(
            before.accounts.receivable, "1200",
            "a held config is not mutated"
        );

        write_atomically(&path, &minimal("globex"));
        assert!(registry.reload().unwrap());
        assert_eq!(reader.version(), 3);
        assert!(
            reader.get(&tenant_id("acme")).is_none(),
            "removed tenants disappear"
        );
    }

    #[test]
    fn a_broken_reload_keeps_the_old_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, minimal("acme")).unwrap();
        let registry = TenantRegistry::load(&path).unwrap();

        for broken in [
            "[[tenants]\n".to_owned(),
            format!("{}{}", minimal("globex"), minimal("globex")),
            minimal("acme").replace("\"2200\"", "\"\""),
        ] {
            write_atomically(&path, &broken);
            assert!(registry.reload().is_err(), "{broken}");
            assert_eq!(registry.version(), 1);
            assert_eq!(registry.tenant_ids(), [tenant_id("acme")]);
            assert_eq!(
                registry
                    .get(&tenant_id("acme"))
                    .unwrap()
                    .accounts
                    .tax_payable,
                "2200"
            );
        }
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(registry.reload(), Err(TenantsError::Read { .. })));
        assert_eq!(registry.tenant_ids(), [tenant_id("acme")]);
    }

    #[test]
    fn debug_prints_the_shape_only() {
        let file = TenantsFile::parse(&minimal("acme"), Path::new("inline")).unwrap();
        let registry = TenantRegistry::from_config(file).unwrap();
        assert_eq!(
            format!("{registry:?}"),
            "TenantRegistry { version: 1, path: None, tenants: 1 }"
        );
    }

    /// The annotated example shipped for operators must stay loadable.
    #[test]
    fn the_deploy_example_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/tenants.example.toml"
        ));
        let registry = TenantRegistry::load(path).unwrap();
        let ids: Vec<String> = registry
            .tenant_ids()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ids, ["acme", "globex", "initech"]);
        let acme = registry.get(&tenant_id("acme")).unwrap();
        let erp = acme.erp.as_ref().unwrap();
        assert!(
            matches!(erp.auth.secrets()[0].1, SecretRef::File { file }
                if file.ends_with("deploy/secrets/acme-netsuite-m2m.pem")),
            "secrets are referenced, not read, at load (relative to the file): {:?}",
            erp.auth.secrets()
        );
        assert_eq!(erp.account_limits().concurrency, 4, "from [[erp_accounts]]");
        assert!(!acme.webhooks.is_empty());
        assert!(!acme.accounts.revenue_by_family.is_empty());
        assert!(acme.rate_limit_per_sec.is_some());
        assert!(registry.get(&tenant_id("initech")).unwrap().erp.is_none());
    }
}
