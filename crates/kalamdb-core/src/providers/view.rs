//! Provider of a view: its stored `SELECT` is planned again at each query, in the caller's
//! session (identity included), with the view's namespace as the default schema. Access checks
//! and USER-table scoping therefore apply through a view exactly as in the query itself.

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType as DfTableType;
use datafusion::error::Result as DfResult;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, col};
use datafusion::physical_plan::ExecutionPlan;
use kalamdb_catalog::catalog::ViewRecord;
use kalamdb_catalog::error::KalamError;
use std::str::FromStr;
use std::sync::Arc;

/// A view as DataFusion sees it.
#[derive(Debug)]
pub struct ViewProvider {
    view: ViewRecord,
    schema: SchemaRef,
}

impl ViewProvider {
    /// The provider of `view`.
    pub fn new(view: ViewRecord) -> Self {
        let fields: Vec<Field> = view
            .columns
            .iter()
            .map(|(name, t, nullable)| {
                Field::new(
                    name,
                    DataType::from_str(t).unwrap_or(DataType::Utf8),
                    *nullable,
                )
            })
            .collect();
        Self {
            schema: Arc::new(Schema::new(fields)),
            view,
        }
    }

    fn broken(&self, e: impl std::fmt::Display) -> datafusion::error::DataFusionError {
        let gone: Vec<&str> = self.view.depends_on.iter().map(String::as_str).collect();
        KalamError::InvalidInput(format!(
            "View '{}.{}' cannot run: {e}. It reads {}; a table it needs may have been \
             dropped or changed. Hint: recreate it with CREATE OR REPLACE VIEW, or DROP VIEW it",
            self.view.namespace_id,
            self.view.view_name,
            gone.join(", ")
        ))
        .into_datafusion()
    }
}

#[async_trait]
impl TableProvider for ViewProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> DfTableType {
        DfTableType::View
    }

    fn get_table_definition(&self) -> Option<&str> {
        Some(&self.view.sql)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(caller) = state.as_any().downcast_ref::<SessionState>() else {
            return Err(self.broken("no session to plan it in"));
        };
        let mut state = caller.clone();
        state.config_mut().options_mut().catalog.default_schema = self.view.namespace_id.clone();
        let plan = state
            .create_logical_plan(&self.view.sql)
            .await
            .map_err(|e| self.broken(e))?;
        if let Some(budget) = state
            .config()
            .get_extension::<crate::expr_limits::ViewBudget>()
        {
            budget.spend(&plan).map_err(|e| e.into_datafusion())?;
        }
        // Same columns, in the order declared at creation (names checked by position).
        if plan.schema().fields().len() != self.schema.fields().len() {
            return Err(self.broken("its query now returns different columns"));
        }
        let mut builder = LogicalPlanBuilder::from(plan);
        if let Some(p) = projection {
            let names: Vec<Expr> = {
                let schema = builder.schema();
                p.iter()
                    .map(|&i| col(schema.qualified_field(i).1.name().as_str()))
                    .collect()
            };
            builder = builder.project(names)?;
        }
        let plan = builder.build()?;
        state.create_physical_plan(&plan).await
    }
}
