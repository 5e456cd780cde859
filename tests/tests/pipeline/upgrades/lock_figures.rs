//! How long an upgrade from each earlier release keeps the table's users waiting, at table sizes given
//! in `UPGRADE_ROWS` (default 1 and 3 million rows): on demand, by scripts/upgrade-check, which prints
//! these figures for docs/upgrades.md.

use consumer::migrations::{self, LAST_RELEASED};
use sqlx::migrate::Migrator;

use super::{
    next_release_expand,
    stall::{fill, probe, settings, ScratchDatabase},
    with_extra, FIRST_RELEASE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fills tables of millions of rows: scripts/upgrade-check"]
async fn lock_durations_of_an_upgrade_from_each_earlier_release() {
    let sizes: Vec<u64> = std::env::var("UPGRADE_ROWS")
        .unwrap_or_else(|_| "1000000,3000000".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("UPGRADE_ROWS: row counts separated by commas")
        })
        .collect();
    let cases: [(&str, Migrator, Migrator); 3] = [
        (
            "first release (20261122, jsonb) -> this release",
            migrations::through(FIRST_RELEASE),
            migrations::through(i64::MAX),
        ),
        (
            "later releases (20261201) -> this release",
            migrations::through(LAST_RELEASED),
            migrations::through(i64::MAX),
        ),
        (
            "this release -> an expand step (nullable column)",
            migrations::through(i64::MAX),
            with_extra(next_release_expand()),
        ),
    ];
    for rows in sizes {
        for (case, from, to) in &cases {
            let database = ScratchDatabase::with_schema(from).await;
            fill(&database, rows).await;
            let pending = to.iter().count() - from.iter().count();
            let (applied, stalls) =
                probe(&database, migrations::apply(&database.url, &settings(), to)).await;
            applied.expect("migration applied");
            let millions = rows as f64 / 1e6;
            println!(
                "UPGRADE {case}: {rows} rows, {pending} migration(s): applied in {:.2} s; longest \
                 write {:.2} s, longest read {:.2} s ({:.2} s per million rows); {} writes, {} reads \
                 meanwhile",
                stalls.work.as_secs_f64(),
                stalls.write.as_secs_f64(),
                stalls.read.as_secs_f64(),
                stalls.longest().as_secs_f64() / millions,
                stalls.writes,
                stalls.reads,
            );
        }
    }
}
