/* The SQLite bench guest: an in-memory database, a thousand rows, one query.
 * benches/build-sqlite compiles it with SQLite's amalgamation to a ~1.3 MB wasm32-wasi module. */
#include <stdio.h>
#include "sqlite3.h"
static int row(void *u, int n, char **v, char **c) { (void)u; for (int i = 0; i < n; i++) printf("%s%s", i ? "|" : "", v[i] ? v[i] : "NULL"); printf("\n"); return 0; }
int main(void) {
  sqlite3 *db; char *err = 0;
  if (sqlite3_open(":memory:", &db) != SQLITE_OK) { printf("open failed\n"); return 1; }
  const char *sql = "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);"
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<1000) INSERT INTO t SELECT x, 'row ' || x FROM c;"
    "SELECT count(*), sum(k), max(v) FROM t;";
  if (sqlite3_exec(db, sql, row, 0, &err) != SQLITE_OK) { printf("error: %s\n", err); return 1; }
  sqlite3_close(db);
  return 0;
}
