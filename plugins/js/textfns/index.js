// Template functions in JavaScript: `{{ steps.a.title | slugify }}`,
// `{{ payload.name | title }}`, `{{ x | replace("a", "b") }}`,
// `{{ steps.t.text | wordcount }}`.
//
// The host calls `call(name, args)` with `args` a JSON array: the piped value
// first, then the filter's own arguments. A thrown {message, retryable}
// becomes the call's error.

const fail = (message) => {
  throw { message, retryable: false };
};

const text = (name, v) => {
  if (typeof v !== "string") fail(`${name}: expected a string, got ${v === null ? "null" : typeof v}`);
  return v;
};

// The engine inside the component is built without ICU (no
// String.prototype.normalize), so common Latin letters are folded by hand.
const FOLD = {
  à: "a", á: "a", â: "a", ã: "a", ä: "a", å: "a", æ: "ae", ç: "c", è: "e", é: "e", ê: "e", ë: "e",
  ì: "i", í: "i", î: "i", ï: "i", ñ: "n", ò: "o", ó: "o", ô: "o", õ: "o", ö: "o", ø: "o", œ: "oe",
  ù: "u", ú: "u", û: "u", ü: "u", ý: "y", ÿ: "y", ß: "ss", ł: "l", š: "s", ž: "z", č: "c", ř: "r",
};

const fns = {
  slugify: (v) =>
    text("slugify", v)
      .toLowerCase()
      .replace(/[^\x00-\x7f]/g, (c) => FOLD[c] ?? c)
      .replace(/[^a-z0-9]+/g, "-")
      .replace(/^-+|-+$/g, ""),
  title: (v) => text("title", v).replace(/\S+/g, (w) => w[0].toUpperCase() + w.slice(1).toLowerCase()),
  replace: (v, from, to) => {
    if (typeof from !== "string" || typeof to !== "string") fail("replace: takes two strings, (from, to)");
    return text("replace", v).split(from).join(to);
  },
  wordcount: (v) => {
    const t = text("wordcount", v).trim();
    return t === "" ? 0 : t.split(/\s+/).length;
  },
};

export const functions = {
  call(name, args) {
    const f = fns[name];
    if (!f) fail(`no function ${JSON.stringify(name)} in textfns`);
    let list;
    try {
      list = JSON.parse(args);
    } catch (e) {
      fail(`arguments are not JSON: ${e}`);
    }
    if (!Array.isArray(list) || list.length === 0) fail("arguments must be a non-empty JSON array");
    return JSON.stringify(f(...list));
  },
};
