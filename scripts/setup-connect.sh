#!/usr/bin/env bash
# Puts Kafka Connect 4.4.0 and the benchmark's peer into .local/connect/ from Maven Central,
# through the profiles of deploy/local/connect/pom.xml:
#
#   .local/connect/lib/                          the worker (ConnectStandalone), converters, transforms,
#                                                log4j2 binding
#   .local/connect/plugins/debezium-jdbc/        Debezium JDBC sink connector + Hibernate + PostgreSQL driver
#   .local/connect/plugins/apicurio-converter/   Apicurio Registry's Connect AvroConverter
#
# Each directory is skipped when it is already there for this pom (a stamp holds the pom's hash).
# The plugin directories leave out the org.apache.kafka and slf4j jars (Connect loads those from
# the worker's classpath whatever a plugin directory holds) and jackson-core/-databind/
# -annotations: with a second jackson-databind in the plugin, Hibernate's ServiceLoader finds the
# worker's jackson-module-blackbird and fails ("BlackbirdModule not a subtype"), so the plugins
# use the worker's Jackson. Needs a JDK 17+ and Maven. About 70 MB on disk, 130 MB into ~/.m2
# and 40 s on a new machine (Apicurio Registry itself comes from scripts/setup-apicurio.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=$ROOT/.local/connect
POM=$ROOT/deploy/local/connect/pom.xml
want=$(sha256sum "$POM" | cut -d' ' -f1)
prop() { sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$POM"; }
kafka=$(prop kafka.version)
debezium=$(prop debezium.version)
apicurio=$(prop apicurio.version)

command -v java >/dev/null || { echo "java not found: Kafka Connect needs a JDK 17+" >&2; exit 1; }
command -v mvn >/dev/null || { echo "mvn not found: the Connect jars come through Maven" >&2; exit 1; }

# fetch PROFILE TARGET WHAT [extra copy-dependencies arguments]
fetch() {
  local profile=$1 target=$2 what=$3
  shift 3
  local stamp=$target/.pom.sha256
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "connect: $what present ($target)"
    return 0
  fi
  echo "connect: fetching $what from Maven Central into $target"
  local started=$SECONDS
  rm -rf "$target" "$target.partial"
  mkdir -p "$target.partial"
  if ! out=$(mvn -q -B -Dstyle.color=never -f "$POM" -P "$profile" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$target.partial" "$@" 2>&1); then
    echo "$out" >&2
    rm -rf "$target.partial"
    exit 1
  fi
  mv "$target.partial" "$target"
  echo "$want" >"$stamp"
  echo "connect: $what: $(ls "$target"/*.jar | wc -l) jars, $(du -sh "$target" | cut -f1), $((SECONDS - started)) s"
}

mkdir -p "$DIR/plugins"
fetch runtime "$DIR/lib" "Kafka Connect $kafka worker"
no_worker_jars=(-DexcludeGroupIds=org.apache.kafka,org.slf4j,com.fasterxml.jackson.core -DexcludeArtifactIds=lz4-java,snappy-java,zstd-jni)
fetch debezium-jdbc "$DIR/plugins/debezium-jdbc" "Debezium JDBC sink $debezium" "${no_worker_jars[@]}"
fetch apicurio-converter "$DIR/plugins/apicurio-converter" "Apicurio converter $apicurio" "${no_worker_jars[@]}"
echo "connect: ready: java -Xmx512m -cp '$DIR/lib/*' org.apache.kafka.connect.cli.ConnectStandalone WORKER.properties CONNECTOR.properties (plugin.path=$DIR/plugins)"
