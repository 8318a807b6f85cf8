//! Cost of a cached SchemaRegistry lookup (target: at most 100 ns, well below a statement's cost), with 1 and 1,000
//! tables registered, and of the same lookup on a table that went through 1,000 ALTERs (each one
//! a new version replacing the cached entry, as `ALTER TABLE` does). Uses a real RocksDB-backed
//! catalog in a temp dir.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kalamdb_catalog::catalog::Catalog;
use kalamdb_catalog::schema_registry::SchemaRegistry;
use kalamdb_commons::{
    ColumnDefinition, KalamDataType, NamespaceId, TableDefinition, TableId, TableName, TableType,
};
use kalamdb_store::{RocksBackend, StorageBackend, StoreOptions};
use std::hint::black_box;
use std::sync::Arc;

fn definition(i: usize) -> TableDefinition {
    let col = |id: u32, name: &str, t, pk: bool| ColumnDefinition {
        column_id: id,
        name: name.into(),
        ordinal: id,
        data_type: t,
        nullable: !pk,
        primary_key: pk,
        default: None,
        added_at_seq: None,
        missing_value: None,
    };
    TableDefinition::new(
        TableId::new(NamespaceId::new("bench"), TableName::new(format!("t{i}"))),
        TableType::Shared,
        vec![
            col(1, "id", KalamDataType::BigInt, true),
            col(2, "name", KalamDataType::Text, false),
            col(3, "score", KalamDataType::Double, false),
            col(4, "at", KalamDataType::Timestamp, false),
        ],
    )
}

fn lookups(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn StorageBackend> =
        Arc::new(RocksBackend::open(dir.path(), &StoreOptions::default()).unwrap());
    let catalog = Catalog::open(backend, 0).unwrap();
    let mut group = c.benchmark_group("schema_registry");
    for tables in [1usize, 1000] {
        let registry = SchemaRegistry::new(catalog.clone());
        for i in 0..tables {
            registry.insert(definition(i));
        }
        let id = TableId::new(
            NamespaceId::new("bench"),
            TableName::new(format!("t{}", tables / 2)),
        );
        group.bench_with_input(
            BenchmarkId::new("cached_arrow_schema", tables),
            &id,
            |b, id| b.iter(|| black_box(registry.arrow_schema(black_box(id)).unwrap())),
        );
    }
    let registry = SchemaRegistry::new(catalog.clone());
    let mut def = definition(0);
    let id = def.table_id();
    registry.insert(def.clone());
    for _ in 0..1000 {
        def.version += 1;
        let column_id = def.next_column_id;
        def.next_column_id += 1;
        def.columns.push(ColumnDefinition {
            column_id,
            name: format!("c{column_id}"),
            ordinal: column_id,
            data_type: KalamDataType::Int,
            nullable: true,
            primary_key: false,
            default: None,
            added_at_seq: None,
            missing_value: None,
        });
        registry.invalidate(&id);
        registry.insert(def.clone());
    }
    group.bench_with_input(
        BenchmarkId::new("cached_arrow_schema_after_alters", 1000),
        &id,
        |b, id| b.iter(|| black_box(registry.arrow_schema(black_box(id)).unwrap())),
    );
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
