// A small ustar writer, for publishing a folder picked in the browser: the gateway takes a tar or
// tar.gz body. Only regular files are written (the gateway refuses links and devices anyway), and
// the archive is a Blob made of the chosen File objects, so nothing is read into memory here.

const BLOCK = 512;
const utf8 = new TextEncoder();
// Octal fields of 11 digits: the largest size a plain ustar header can state.
const MAX_FILE_BYTES = 8 ** 11 - 1;

/**
 * The files of a folder chosen with <input type=file webkitdirectory>, as archive entries:
 * paths relative to the chosen folder (its own name dropped), sorted, without version-control
 * and desktop clutter.
 */
export function folderEntries(fileList) {
  const entries = [];
  for (const file of fileList) {
    const parts = (file.webkitRelativePath || file.name).split("/").filter(Boolean);
    // webkitRelativePath starts with the chosen folder's own name: the site's root is inside it.
    if (parts.length > 1) parts.shift();
    if (parts.some((part) => part === ".git" || part === ".DS_Store" || part === "Thumbs.db")) continue;
    entries.push({ path: parts.join("/"), file });
  }
  entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return entries;
}

/** A ustar archive of `entries` ([{path, file: Blob}]), as a Blob. Throws on paths ustar cannot hold. */
export function tarArchive(entries) {
  const parts = [];
  for (const { path, file } of entries) {
    if (file.size > MAX_FILE_BYTES) throw new Error(`${path} is too large for a tar archive.`);
    const mtime = Math.floor((file.lastModified || Date.now()) / 1000);
    parts.push(header(path, file.size, mtime), file);
    const padding = (BLOCK - (file.size % BLOCK)) % BLOCK;
    if (padding) parts.push(new Uint8Array(padding));
  }
  // The end of the archive: two empty blocks.
  parts.push(new Uint8Array(2 * BLOCK));
  return new Blob(parts, { type: "application/x-tar" });
}

function header(path, size, mtime) {
  const block = new Uint8Array(BLOCK);
  const [prefix, name] = splitPath(path);
  putBytes(block, 0, 100, name);
  putOctal(block, 100, 8, 0o644); // mode
  putOctal(block, 108, 8, 0); // uid
  putOctal(block, 116, 8, 0); // gid
  putOctal(block, 124, 12, size);
  putOctal(block, 136, 12, mtime);
  block.fill(0x20, 148, 156); // the checksum counts its own field as spaces
  block[156] = 0x30; // "0": a regular file
  putBytes(block, 257, 6, utf8.encode("ustar\0"));
  putBytes(block, 263, 2, utf8.encode("00"));
  putBytes(block, 345, 155, prefix);
  let checksum = 0;
  for (const byte of block) checksum += byte;
  putBytes(block, 148, 8, utf8.encode(`${checksum.toString(8).padStart(6, "0")}\0 `));
  return block;
}

/** ustar holds a path as prefix (155 bytes) + "/" + name (100 bytes). */
function splitPath(path) {
  const bytes = utf8.encode(path);
  if (bytes.length <= 100) return [new Uint8Array(0), bytes];
  for (let slash = bytes.length - 1; slash > 0; slash--) {
    if (bytes[slash] !== 0x2f) continue;
    const prefix = bytes.subarray(0, slash);
    const name = bytes.subarray(slash + 1);
    if (name.length > 100) break;
    if (prefix.length <= 155 && name.length > 0) return [prefix, name];
  }
  throw new Error(`The path ${path} is too long for a tar archive (at most 255 bytes, split at a folder).`);
}

function putBytes(block, offset, length, bytes) {
  block.set(bytes.subarray(0, length), offset);
}

function putOctal(block, offset, length, value) {
  putBytes(block, offset, length, utf8.encode(`${value.toString(8).padStart(length - 1, "0")}\0`));
}
