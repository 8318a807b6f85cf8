//! The DataFusion `kalam` catalog: one schema per namespace plus `system` and
//! `information_schema`, resolved live from the persisted catalog and the
//! [`SchemaRegistry`](kalamdb_catalog::schema_registry::SchemaRegistry), so DDL needs no registration step.

use super::information_schema::{INFORMATION_SCHEMA, InformationSchema};
use super::system::{SYSTEM_TABLES, SystemTable, SystemTableProvider};
use super::table::AppTableProvider;
use super::view::ViewProvider;
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::Result as DfResult;
use kalamdb_commons::{NamespaceId, TableId, TableName};
use std::sync::Arc;

pub use super::deps::{CATALOG_NAME, ProviderDeps, SYSTEM_SCHEMA};

/// The `kalam` catalog.
#[derive(Debug)]
pub struct KalamCatalog {
    deps: ProviderDeps,
}

impl KalamCatalog {
    /// Creates the catalog provider.
    pub fn new(deps: ProviderDeps) -> Self {
        Self { deps }
    }
}

impl CatalogProvider for KalamCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .deps
            .catalog
            .namespaces()
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.namespace_id)
            .collect();
        names.push(SYSTEM_SCHEMA.into());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == INFORMATION_SCHEMA {
            return Some(Arc::new(InformationSchema::new(
                CATALOG_NAME,
                Arc::new(KalamCatalog::new(self.deps.clone())),
                self.deps.clone(),
            )));
        }
        if name == SYSTEM_SCHEMA {
            return Some(Arc::new(SystemSchema {
                deps: self.deps.clone(),
            }));
        }
        let ns = NamespaceId::new(name);
        self.deps.catalog.namespace(&ns).ok().flatten()?;
        Some(Arc::new(NamespaceSchema {
            ns,
            deps: self.deps.clone(),
        }))
    }
}

/// One namespace.
#[derive(Debug)]
struct NamespaceSchema {
    ns: NamespaceId,
    deps: ProviderDeps,
}

#[async_trait]
impl SchemaProvider for NamespaceSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .deps
            .catalog
            .tables(Some(&self.ns))
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.name.to_string())
            .collect();
        names.extend(
            self.deps
                .catalog
                .views(self.ns.as_str())
                .unwrap_or_default()
                .into_iter()
                .map(|v| v.view_name),
        );
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let id = TableId::new(self.ns.clone(), TableName::new(name));
        let cached = self
            .deps
            .registry
            .get(&id)
            .map_err(|e| e.into_datafusion())?;
        if let Some(t) = cached {
            return Ok(Some(Arc::new(AppTableProvider::new(
                t,
                Arc::clone(&self.deps.tables),
            ))));
        }
        let view = self
            .deps
            .catalog
            .view(self.ns.as_str(), name)
            .map_err(|e| e.into_datafusion())?;
        Ok(view.map(|v| Arc::new(ViewProvider::new(v)) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        let id = TableId::new(self.ns.clone(), TableName::new(name));
        matches!(self.deps.registry.get(&id), Ok(Some(_)))
            || matches!(self.deps.catalog.view(self.ns.as_str(), name), Ok(Some(_)))
    }
}

/// The `system` schema.
#[derive(Debug)]
struct SystemSchema {
    deps: ProviderDeps,
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        SYSTEM_TABLES.iter().map(|t| t.name().to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(SystemTable::from_name(name).map(|kind| {
            Arc::new(SystemTableProvider::new(kind, self.deps.clone())) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        SystemTable::from_name(name).is_some()
    }
}
