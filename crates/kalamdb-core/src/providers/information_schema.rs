//! The `information_schema` schema: DataFusion's standard views over the `kalam` catalog, with
//! two corrections: `columns.column_default` is filled in from the table definitions
//! (DataFusion always leaves it NULL), and `views` lists only views (DataFusion lists every
//! table there, with a NULL definition). DataFusion's built-in copy is switched off in the session config so that this one,
//! served by the `kalam` catalog, is the one queries and `SHOW TABLES`/`SHOW COLUMNS` see.

use super::deps::{ProviderDeps, SYSTEM_SCHEMA};
use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::{filter_record_batch, is_not_null};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProviderList, SchemaProvider, Session,
    TableProvider,
};
use datafusion::datasource::TableType as DfTableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};
use kalamdb_commons::{NamespaceId, TableId, TableName};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

/// Name of the schema.
pub const INFORMATION_SCHEMA: &str = "information_schema";

/// `information_schema` of `catalog` (the `kalam` catalog), named `catalog_name`.
#[derive(Debug)]
pub(super) struct InformationSchema {
    inner: InformationSchemaProvider,
    deps: ProviderDeps,
}

impl InformationSchema {
    pub(super) fn new(
        catalog_name: &str,
        catalog: Arc<dyn CatalogProvider>,
        deps: ProviderDeps,
    ) -> Self {
        let list = MemoryCatalogProviderList::new();
        list.register_catalog(catalog_name.to_string(), catalog);
        Self {
            inner: InformationSchemaProvider::new(Arc::new(list))
                .with_table_functions((*deps.table_functions).clone()),
            deps,
        }
    }
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let table = self.inner.table(name).await?;
        let fix = match name.to_ascii_lowercase().as_str() {
            "columns" => Fix::ColumnDefaults,
            "views" => Fix::OnlyViews,
            _ => return Ok(table),
        };
        Ok(table.map(|inner| {
            Arc::new(Corrected {
                inner,
                fix,
                deps: self.deps.clone(),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// What [`Corrected`] changes in DataFusion's rows.
#[derive(Debug, Clone, Copy)]
enum Fix {
    /// `columns`: each column's declared `DEFAULT` as SQL text.
    ColumnDefaults,
    /// `views`: only rows with a definition (views).
    OnlyViews,
}

/// One of DataFusion's `information_schema` tables with its rows corrected by `fix`.
#[derive(Debug)]
struct Corrected {
    inner: Arc<dyn TableProvider>,
    fix: Fix,
    deps: ProviderDeps,
}

impl Corrected {
    /// `admin`: the caller may read view definitions (plain users see the views, with a
    /// NULL definition: a view's SQL can name tables and filters they may not know of).
    fn correct(&self, batch: RecordBatch, admin: bool) -> DfResult<RecordBatch> {
        match self.fix {
            Fix::ColumnDefaults => self.with_defaults(batch),
            Fix::OnlyViews => {
                let index = batch.schema().index_of("definition")?;
                let keep = is_not_null(batch.column(index))?;
                let views = filter_record_batch(&batch, &keep)?;
                if admin {
                    return Ok(views);
                }
                let mut columns: Vec<ArrayRef> = views.columns().to_vec();
                columns[index] = datafusion::arrow::array::new_null_array(
                    columns[index].data_type(),
                    views.num_rows(),
                );
                Ok(RecordBatch::try_new(views.schema(), columns)?)
            }
        }
    }

    /// `batch` with its `column_default` column taken from the table definitions. Columns of
    /// system and `information_schema` tables, of views, and without a DEFAULT stay NULL.
    fn with_defaults(&self, batch: RecordBatch) -> DfResult<RecordBatch> {
        let text = |name: &str| -> DfResult<&StringArray> {
            let index = batch.schema().index_of(name)?;
            batch
                .column(index)
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| DataFusionError::Internal(format!("{name} is not Utf8")))
        };
        let (schemas, tables, names) = (
            text("table_schema")?,
            text("table_name")?,
            text("column_name")?,
        );
        let mut defaults: HashMap<(&str, &str), HashMap<String, String>> = HashMap::new();
        let mut column = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let (schema, table) = (schemas.value(row), tables.value(row));
            let of_table = match defaults.entry((schema, table)) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(slot) => slot.insert(self.table_defaults(schema, table)?),
            };
            column.push(of_table.get(names.value(row)).cloned());
        }
        let index = batch.schema().index_of("column_default")?;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[index] = Arc::new(StringArray::from(column));
        Ok(RecordBatch::try_new(batch.schema(), columns)?)
    }

    /// Column name -> DEFAULT text of one application table; empty for anything else (views
    /// and system tables have no defaults; the `system` namespace name is reserved).
    fn table_defaults(&self, schema: &str, table: &str) -> DfResult<HashMap<String, String>> {
        if schema == SYSTEM_SCHEMA || schema == INFORMATION_SCHEMA {
            return Ok(HashMap::new());
        }
        let id = TableId::new(NamespaceId::new(schema), TableName::new(table));
        let Some(cached) = self
            .deps
            .registry
            .get(&id)
            .map_err(|e| e.into_datafusion())?
        else {
            return Ok(HashMap::new());
        };
        Ok(cached
            .def
            .columns
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.default.as_ref()?.sql())))
            .collect())
    }
}

#[async_trait]
impl TableProvider for Corrected {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> DfTableType {
        DfTableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let admin = super::identity_of(state)?.role.is_admin();
        let all = self.inner.scan(state, None, &[], None).await?;
        let batches = collect(all, state.task_ctx())
            .await?
            .into_iter()
            .map(|b| self.correct(b, admin))
            .collect::<DfResult<Vec<_>>>()?;
        let exec: Arc<dyn ExecutionPlan> =
            MemorySourceConfig::try_new_exec(&[batches], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}
