// Fixes for CongoDB as published in @push.rocks/smartmongo 2.2.0 (memory storage only), applied
// when this module is imported; nothing in node_modules is edited. Each fix is for a stock
// behaviour the store tests would fail on:
//
//  ids      Only ObjectId `_id`s work: a string or binary `_id` is refused (or turned into an
//           ObjectId). Documents are now kept under a key made from the `_id`'s type and value.
//  unique   Unique indexes are recorded but never enforced. Every insert and update now checks
//           them (sparse, partialFilterExpression and multikey paths such as
//           `emails.address_canonical`) and fails with code 11000, PyMongo's DuplicateKeyError.
//  indexes  The index commands keep a per-collection cache that outlives dropDatabase, so a
//           database dropped and made again lists stale indexes and silently skips new ones.
//           Index commands now read and write the storage's own list.
//  ttl      TTL indexes never expire anything. sweepExpired() deletes what they would.
//  binary   Any update operator turns the document's Binary (bytes) values into plain objects.
//           BSON values are now shared as they are, not copied field by field.
//  replset  It only ever says it is a standalone server. With CONGO_REPLICA_SET=NAME it says
//           it is the primary of a one-member replica set NAME, so a driver connects with
//           `replicaSet=NAME` (and retryable writes) as it does to a real one. Nothing else of
//           a replica set is there: no secondaries, no elections, no oplog.
//
// Unique checks scan the collection (with each document's index keys cached): fine for tests.
import {
  CongoDuplicateKeyError, CongoIndexError, IndexEngine, MemoryStorageAdapter, ObjectId,
  QueryEngine, UpdateEngine, plugins,
} from '@push.rocks/smartmongo/dist_ts/congodb/index.js';
import { HelloHandler } from '@push.rocks/smartmongo/dist_ts/congodb/server/handlers/HelloHandler.js';

const { EJSON } = plugins.bson;

/** A string equal for equal BSON values and different for different ones (types included). */
function canonical(value) {
  if (value === undefined) return 'undefined';
  return value === null ? 'null' : EJSON.stringify(value, { relaxed: false });
}

/** Storage key of an `_id`; ObjectIds keep the stock hex key, nothing else can look like one. */
function keyOf(id) {
  return id instanceof ObjectId ? id.toHexString() : `\0${canonical(id)}`;
}

/** The values an index sees at a dotted path, looking into arrays as a multikey index does. */
function valuesAt(doc, path) {
  let found = [doc];
  for (const part of path.split('.')) {
    found = found
      .flatMap((value) => (Array.isArray(value) ? value : [value]))
      .flatMap((value) => (value !== null && typeof value === 'object' && Object.hasOwn(value, part) ? [value[part]] : []));
  }
  return found.flatMap((value) => (Array.isArray(value) ? (value.length ? value : [undefined]) : [value]));
}

/** The document's keys in the index, or null when the index leaves the document out. */
function indexKeys(doc, index) {
  if (index.partialFilterExpression && !QueryEngine.matches(doc, index.partialFilterExpression)) return null;
  const perField = Object.keys(index.key).map((field) => valuesAt(doc, field));
  if (index.sparse && perField.every((values) => values.length === 0)) return null;
  let keys = [''];
  for (const values of perField) {
    const parts = (values.length ? values : [null]).map(canonical);
    keys = keys.flatMap((key) => parts.map((part) => `${key}|${part}`));
  }
  return new Set(keys);
}

// Stored documents are replaced on every update, never changed in place, so keys computed for a
// stored document object stay right for as long as that object lives.
const keyCache = new WeakMap();
function storedKeys(doc, index) {
  let byIndex = keyCache.get(doc);
  if (!byIndex) keyCache.set(doc, (byIndex = new Map()));
  if (!byIndex.has(index)) byIndex.set(index, indexKeys(doc, index));
  return byIndex.get(index);
}

function duplicate(db, coll, index, doc) {
  const keyValue = Object.fromEntries(Object.keys(index.key).map((field) => [field, valuesAt(doc, field)[0] ?? null]));
  const shown = Object.entries(keyValue).map(([field, value]) => `${field}: ${canonical(value)}`).join(', ');
  return new CongoDuplicateKeyError(
    `E11000 duplicate key error collection: ${db}.${coll} index: ${index.name} dup key: { ${shown} }`,
    index.key, keyValue);
}

/** Throws if `doc` has a unique-index key that a document other than `ownKey` has too. */
function checkUnique(storage, db, coll, doc, ownKey) {
  const docs = storage.databases.get(db)?.get(coll) ?? new Map();
  for (const index of storage.indexes.get(db)?.get(coll) ?? []) {
    if (!index.unique || index.name === '_id_') continue;
    const mine = indexKeys(doc, index);
    if (!mine) continue;
    for (const [key, other] of docs) {
      const theirs = key === ownKey ? null : storedKeys(other, index);
      if (theirs && [...mine].some((k) => theirs.has(k))) throw duplicate(db, coll, index, doc);
    }
  }
}

// ---- ids, unique
Object.assign(MemoryStorageAdapter.prototype, {
  async insertOne(db, coll, doc) {
    const docs = this.ensureCollection(db, coll);
    const stored = { _id: doc._id ?? new ObjectId(), ...doc };
    const key = keyOf(stored._id);
    if (docs.has(key)) throw duplicate(db, coll, { name: '_id_', key: { _id: 1 } }, stored);
    checkUnique(this, db, coll, stored, null);
    docs.set(key, stored);
    return stored;
  },
  async findById(db, coll, id) {
    return this.ensureCollection(db, coll).get(keyOf(id)) ?? null;
  },
  async updateById(db, coll, id, doc) {
    const docs = this.ensureCollection(db, coll);
    const key = keyOf(id);
    if (!docs.has(key)) return false;
    checkUnique(this, db, coll, doc, key);
    docs.set(key, doc);
    return true;
  },
  async deleteById(db, coll, id) {
    return this.ensureCollection(db, coll).delete(keyOf(id));
  },
});

// ---- indexes (no cache: every call goes to the storage)
const INDEX_OPTIONS = ['unique', 'sparse', 'expireAfterSeconds', 'partialFilterExpression'];
Object.assign(IndexEngine.prototype, {
  async listIndexes() {
    return (await this.storage.getIndexes(this.dbName, this.collName)).map((index) => ({ v: 2, ...index }));
  },
  async createIndex(key, options = {}) {
    const name = options.name ?? this.generateIndexName(key);
    if ((await this.storage.getIndexes(this.dbName, this.collName)).some((index) => index.name === name)) return name;
    const spec = { key };
    for (const option of INDEX_OPTIONS) if (options[option] !== undefined) spec[option] = options[option];
    if (spec.unique) {
      const seen = new Set();
      for (const doc of await this.storage.findAll(this.dbName, this.collName)) {
        for (const k of indexKeys(doc, spec) ?? []) {
          if (seen.has(k)) throw duplicate(this.dbName, this.collName, { name, ...spec }, doc);
          seen.add(k);
        }
      }
    }
    await this.storage.saveIndex(this.dbName, this.collName, name, spec);
    return name;
  },
  async dropIndex(name) {
    if (!(await this.storage.dropIndex(this.dbName, this.collName, name))) {
      throw new CongoIndexError(`index not found with name [${name}]`, 27);
    }
  },
  async dropAllIndexes() {
    for (const { name } of await this.storage.getIndexes(this.dbName, this.collName)) {
      if (name !== '_id_') await this.storage.dropIndex(this.dbName, this.collName, name);
    }
  },
});

// ---- binary
const stockClone = UpdateEngine.deepClone;
UpdateEngine.deepClone = function deepClone(value) {
  return value?._bsontype || ArrayBuffer.isView(value) ? value : stockClone.call(this, value);
};

// ---- ttl
/** Deletes the documents that the TTL indexes say have expired (mongod: every 60 s). */
export function sweepExpired(storage, now = Date.now()) {
  for (const [db, collections] of storage.indexes) {
    for (const [coll, indexes] of collections) {
      const docs = storage.databases.get(db)?.get(coll);
      for (const index of indexes) {
        const fields = Object.keys(index.key);
        if (!docs || typeof index.expireAfterSeconds !== 'number' || fields.length !== 1) continue;
        for (const [key, doc] of docs) {
          if (index.partialFilterExpression && !QueryEngine.matches(doc, index.partialFilterExpression)) continue;
          const times = valuesAt(doc, fields[0]).filter((v) => v instanceof Date).map((d) => d.getTime());
          if (times.length && Math.min(...times) + index.expireAfterSeconds * 1000 <= now) docs.delete(key);
        }
      }
    }
  }
}

const replicaSet = process.env.CONGO_REPLICA_SET;
if (replicaSet) {
  const electionId = new ObjectId();
  const stockHello = HelloHandler.prototype.handle;
  HelloHandler.prototype.handle = async function (context) {
    const response = await stockHello.call(this, context);
    const me = `127.0.0.1:${process.argv[2]}`;
    return {
      ...response, setName: replicaSet, setVersion: 1, hosts: [me], primary: me, me,
      secondary: false, electionId, lastWrite: { lastWriteDate: new Date() },
    };
  };
}
