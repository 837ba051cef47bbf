(() => {
  var __create = Object.create;
  var __defProp = Object.defineProperty;
  var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
  var __getOwnPropNames = Object.getOwnPropertyNames;
  var __getProtoOf = Object.getPrototypeOf;
  var __hasOwnProp = Object.prototype.hasOwnProperty;
  var __commonJS = (cb, mod) => function __require() {
    try {
      return mod || (0, cb[__getOwnPropNames(cb)[0]])((mod = { exports: {} }).exports, mod), mod.exports;
    } catch (e) {
      throw mod = 0, e;
    }
  };
  var __copyProps = (to, from, except, desc) => {
    if (from && typeof from === "object" || typeof from === "function") {
      for (let key2 of __getOwnPropNames(from))
        if (!__hasOwnProp.call(to, key2) && key2 !== except)
          __defProp(to, key2, { get: () => from[key2], enumerable: !(desc = __getOwnPropDesc(from, key2)) || desc.enumerable });
    }
    return to;
  };
  var __toESM = (mod, isNodeMode, target) => (target = mod != null ? __create(__getProtoOf(mod)) : {}, __copyProps(
    // If the importer is in node compatibility mode or this is not an ESM
    // file that has been converted to a CommonJS file using a Babel-
    // compatible transform (i.e. "__esModule" has not been set), then set
    // "default" to the CommonJS "module.exports" for node compatibility.
    isNodeMode || !mod || !mod.__esModule ? __defProp(target, "default", { value: mod, enumerable: true }) : target,
    mod
  ));

  // node_modules/requires-port/index.js
  var require_requires_port = __commonJS({
    "node_modules/requires-port/index.js"(exports, module) {
      "use strict";
      module.exports = function required(port, protocol) {
        protocol = protocol.split(":")[0];
        port = +port;
        if (!port) return false;
        switch (protocol) {
          case "http":
          case "ws":
            return port !== 80;
          case "https":
          case "wss":
            return port !== 443;
          case "ftp":
            return port !== 21;
          case "gopher":
            return port !== 70;
          case "file":
            return false;
        }
        return port !== 0;
      };
    }
  });

  // node_modules/querystringify/index.js
  var require_querystringify = __commonJS({
    "node_modules/querystringify/index.js"(exports) {
      "use strict";
      var has = Object.prototype.hasOwnProperty;
      var undef;
      function decode2(input) {
        try {
          return decodeURIComponent(input.replace(/\+/g, " "));
        } catch (e) {
          return null;
        }
      }
      function encode2(input) {
        try {
          return encodeURIComponent(input);
        } catch (e) {
          return null;
        }
      }
      function querystring(query) {
        var parser = /([^=?#&]+)=?([^&]*)/g, result = {}, part;
        while (part = parser.exec(query)) {
          var key2 = decode2(part[1]), value = decode2(part[2]);
          if (key2 === null || value === null || key2 in result) continue;
          result[key2] = value;
        }
        return result;
      }
      function querystringify(obj, prefix) {
        prefix = prefix || "";
        var pairs = [], value, key2;
        if ("string" !== typeof prefix) prefix = "?";
        for (key2 in obj) {
          if (has.call(obj, key2)) {
            value = obj[key2];
            if (!value && (value === null || value === undef || isNaN(value))) {
              value = "";
            }
            key2 = encode2(key2);
            value = encode2(value);
            if (key2 === null || value === null) continue;
            pairs.push(key2 + "=" + value);
          }
        }
        return pairs.length ? prefix + pairs.join("&") : "";
      }
      exports.stringify = querystringify;
      exports.parse = querystring;
    }
  });

  // node_modules/url-parse/index.js
  var require_url_parse = __commonJS({
    "node_modules/url-parse/index.js"(exports, module) {
      "use strict";
      var required = require_requires_port();
      var qs = require_querystringify();
      var controlOrWhitespace = /^[\x00-\x20\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+/;
      var CRHTLF = /[\n\r\t]/g;
      var slashes = /^[A-Za-z][A-Za-z0-9+-.]*:\/\//;
      var port = /:\d+$/;
      var protocolre = /^([a-z][a-z0-9.+-]*:)?(\/\/)?([\\/]+)?([\S\s]*)/i;
      var windowsDriveLetter = /^[a-zA-Z]:/;
      function trimLeft(str) {
        return (str ? str : "").toString().replace(controlOrWhitespace, "");
      }
      var rules = [
        ["#", "hash"],
        // Extract from the back.
        ["?", "query"],
        // Extract from the back.
        function sanitize(address, url) {
          return isSpecial(url.protocol) ? address.replace(/\\/g, "/") : address;
        },
        ["/", "pathname"],
        // Extract from the back.
        ["@", "auth", 1],
        // Extract from the front.
        [NaN, "host", void 0, 1, 1],
        // Set left over value.
        [/:(\d*)$/, "port", void 0, 1],
        // RegExp the back.
        [NaN, "hostname", void 0, 1, 1]
        // Set left over.
      ];
      var ignore = { hash: 1, query: 1 };
      function lolcation(loc) {
        var globalVar;
        if (typeof window !== "undefined") globalVar = window;
        else if (typeof global !== "undefined") globalVar = global;
        else if (typeof self !== "undefined") globalVar = self;
        else globalVar = {};
        var location = globalVar.location || {};
        loc = loc || location;
        var finaldestination = {}, type = typeof loc, key2;
        if ("blob:" === loc.protocol) {
          finaldestination = new Url(unescape(loc.pathname), {});
        } else if ("string" === type) {
          finaldestination = new Url(loc, {});
          for (key2 in ignore) delete finaldestination[key2];
        } else if ("object" === type) {
          for (key2 in loc) {
            if (key2 in ignore) continue;
            finaldestination[key2] = loc[key2];
          }
          if (finaldestination.slashes === void 0) {
            finaldestination.slashes = slashes.test(loc.href);
          }
        }
        return finaldestination;
      }
      function isSpecial(scheme) {
        return scheme === "file:" || scheme === "ftp:" || scheme === "http:" || scheme === "https:" || scheme === "ws:" || scheme === "wss:";
      }
      function extractProtocol(address, location) {
        address = trimLeft(address);
        address = address.replace(CRHTLF, "");
        location = location || {};
        var match = protocolre.exec(address);
        var protocol = match[1] ? match[1].toLowerCase() : "";
        var forwardSlashes = !!match[2];
        var otherSlashes = !!match[3];
        var slashesCount = 0;
        var rest;
        if (forwardSlashes) {
          if (otherSlashes) {
            rest = match[2] + match[3] + match[4];
            slashesCount = match[2].length + match[3].length;
          } else {
            rest = match[2] + match[4];
            slashesCount = match[2].length;
          }
        } else {
          if (otherSlashes) {
            rest = match[3] + match[4];
            slashesCount = match[3].length;
          } else {
            rest = match[4];
          }
        }
        if (protocol === "file:") {
          if (slashesCount >= 2) {
            rest = rest.slice(2);
          }
        } else if (isSpecial(protocol)) {
          rest = match[4];
        } else if (protocol) {
          if (forwardSlashes) {
            rest = rest.slice(2);
          }
        } else if (slashesCount >= 2 && isSpecial(location.protocol)) {
          rest = match[4];
        }
        return {
          protocol,
          slashes: forwardSlashes || isSpecial(protocol),
          slashesCount,
          rest
        };
      }
      function resolve(relative, base) {
        if (relative === "") return base;
        var path = (base || "/").split("/").slice(0, -1).concat(relative.split("/")), i = path.length, last = path[i - 1], unshift = false, up = 0;
        while (i--) {
          if (path[i] === ".") {
            path.splice(i, 1);
          } else if (path[i] === "..") {
            path.splice(i, 1);
            up++;
          } else if (up) {
            if (i === 0) unshift = true;
            path.splice(i, 1);
            up--;
          }
        }
        if (unshift) path.unshift("");
        if (last === "." || last === "..") path.push("");
        return path.join("/");
      }
      function Url(address, location, parser) {
        address = trimLeft(address);
        address = address.replace(CRHTLF, "");
        if (!(this instanceof Url)) {
          return new Url(address, location, parser);
        }
        var relative, extracted, parse, instruction, index, key2, instructions = rules.slice(), type = typeof location, url = this, i = 0;
        if ("object" !== type && "string" !== type) {
          parser = location;
          location = null;
        }
        if (parser && "function" !== typeof parser) parser = qs.parse;
        location = lolcation(location);
        extracted = extractProtocol(address || "", location);
        relative = !extracted.protocol && !extracted.slashes;
        url.slashes = extracted.slashes || relative && location.slashes;
        url.protocol = extracted.protocol || location.protocol || "";
        address = extracted.rest;
        if (extracted.protocol === "file:" && (extracted.slashesCount !== 2 || windowsDriveLetter.test(address)) || !extracted.slashes && (extracted.protocol || extracted.slashesCount < 2 || !isSpecial(url.protocol))) {
          instructions[3] = [/(.*)/, "pathname"];
        }
        for (; i < instructions.length; i++) {
          instruction = instructions[i];
          if (typeof instruction === "function") {
            address = instruction(address, url);
            continue;
          }
          parse = instruction[0];
          key2 = instruction[1];
          if (parse !== parse) {
            url[key2] = address;
          } else if ("string" === typeof parse) {
            index = parse === "@" ? address.lastIndexOf(parse) : address.indexOf(parse);
            if (~index) {
              if ("number" === typeof instruction[2]) {
                url[key2] = address.slice(0, index);
                address = address.slice(index + instruction[2]);
              } else {
                url[key2] = address.slice(index);
                address = address.slice(0, index);
              }
            }
          } else if (index = parse.exec(address)) {
            url[key2] = index[1];
            address = address.slice(0, index.index);
          }
          url[key2] = url[key2] || (relative && instruction[3] ? location[key2] || "" : "");
          if (instruction[4]) url[key2] = url[key2].toLowerCase();
        }
        if (parser) url.query = parser(url.query);
        if (relative && location.slashes && url.pathname.charAt(0) !== "/" && (url.pathname !== "" || location.pathname !== "")) {
          url.pathname = resolve(url.pathname, location.pathname);
        }
        if (url.pathname.charAt(0) !== "/" && isSpecial(url.protocol)) {
          url.pathname = "/" + url.pathname;
        }
        if (!required(url.port, url.protocol)) {
          url.host = url.hostname;
          url.port = "";
        }
        url.username = url.password = "";
        if (url.auth) {
          index = url.auth.indexOf(":");
          if (~index) {
            url.username = url.auth.slice(0, index);
            url.username = encodeURIComponent(decodeURIComponent(url.username));
            url.password = url.auth.slice(index + 1);
            url.password = encodeURIComponent(decodeURIComponent(url.password));
          } else {
            url.username = encodeURIComponent(decodeURIComponent(url.auth));
          }
          url.auth = url.password ? url.username + ":" + url.password : url.username;
        }
        url.origin = url.protocol !== "file:" && isSpecial(url.protocol) && url.host ? url.protocol + "//" + url.host : "null";
        url.href = url.toString();
      }
      function set(part, value, fn) {
        var url = this;
        switch (part) {
          case "query":
            if ("string" === typeof value && value.length) {
              value = (fn || qs.parse)(value);
            }
            url[part] = value;
            break;
          case "port":
            url[part] = value;
            if (!required(value, url.protocol)) {
              url.host = url.hostname;
              url[part] = "";
            } else if (value) {
              url.host = url.hostname + ":" + value;
            }
            break;
          case "hostname":
            url[part] = value;
            if (url.port) value += ":" + url.port;
            url.host = value;
            break;
          case "host":
            url[part] = value;
            if (port.test(value)) {
              value = value.split(":");
              url.port = value.pop();
              url.hostname = value.join(":");
            } else {
              url.hostname = value;
              url.port = "";
            }
            break;
          case "protocol":
            url.protocol = value.toLowerCase();
            url.slashes = !fn;
            break;
          case "pathname":
          case "hash":
            if (value) {
              var char = part === "pathname" ? "/" : "#";
              url[part] = value.charAt(0) !== char ? char + value : value;
            } else {
              url[part] = value;
            }
            break;
          case "username":
          case "password":
            url[part] = encodeURIComponent(value);
            break;
          case "auth":
            var index = value.indexOf(":");
            if (~index) {
              url.username = value.slice(0, index);
              url.username = encodeURIComponent(decodeURIComponent(url.username));
              url.password = value.slice(index + 1);
              url.password = encodeURIComponent(decodeURIComponent(url.password));
            } else {
              url.username = encodeURIComponent(decodeURIComponent(value));
            }
        }
        for (var i = 0; i < rules.length; i++) {
          var ins = rules[i];
          if (ins[4]) url[ins[1]] = url[ins[1]].toLowerCase();
        }
        url.auth = url.password ? url.username + ":" + url.password : url.username;
        url.origin = url.protocol !== "file:" && isSpecial(url.protocol) && url.host ? url.protocol + "//" + url.host : "null";
        url.href = url.toString();
        return url;
      }
      function toString(stringify) {
        if (!stringify || "function" !== typeof stringify) stringify = qs.stringify;
        var query, url = this, host = url.host, protocol = url.protocol;
        if (protocol && protocol.charAt(protocol.length - 1) !== ":") protocol += ":";
        var result = protocol + (url.protocol && url.slashes || isSpecial(url.protocol) ? "//" : "");
        if (url.username) {
          result += url.username;
          if (url.password) result += ":" + url.password;
          result += "@";
        } else if (url.password) {
          result += ":" + url.password;
          result += "@";
        } else if (url.protocol !== "file:" && isSpecial(url.protocol) && !host && url.pathname !== "/") {
          result += "@";
        }
        if (host[host.length - 1] === ":" || port.test(url.hostname) && !url.port) {
          host += ":";
        }
        result += host + url.pathname;
        query = "object" === typeof url.query ? stringify(url.query) : url.query;
        if (query) result += "?" !== query.charAt(0) ? "?" + query : query;
        if (url.hash) result += url.hash;
        return result;
      }
      Url.prototype = { set, toString };
      Url.extractProtocol = extractProtocol;
      Url.location = lolcation;
      Url.trimLeft = trimLeft;
      Url.qs = qs;
      module.exports = Url;
    }
  });

  // node_modules/tus-js-client/lib.esm/error.js
  function _typeof(o) {
    "@babel/helpers - typeof";
    return _typeof = "function" == typeof Symbol && "symbol" == typeof Symbol.iterator ? function(o2) {
      return typeof o2;
    } : function(o2) {
      return o2 && "function" == typeof Symbol && o2.constructor === Symbol && o2 !== Symbol.prototype ? "symbol" : typeof o2;
    }, _typeof(o);
  }
  function _defineProperties(target, props) {
    for (var i = 0; i < props.length; i++) {
      var descriptor = props[i];
      descriptor.enumerable = descriptor.enumerable || false;
      descriptor.configurable = true;
      if ("value" in descriptor) descriptor.writable = true;
      Object.defineProperty(target, _toPropertyKey(descriptor.key), descriptor);
    }
  }
  function _createClass(Constructor, protoProps, staticProps) {
    if (protoProps) _defineProperties(Constructor.prototype, protoProps);
    if (staticProps) _defineProperties(Constructor, staticProps);
    Object.defineProperty(Constructor, "prototype", { writable: false });
    return Constructor;
  }
  function _toPropertyKey(t) {
    var i = _toPrimitive(t, "string");
    return "symbol" == _typeof(i) ? i : i + "";
  }
  function _toPrimitive(t, r) {
    if ("object" != _typeof(t) || !t) return t;
    var e = t[Symbol.toPrimitive];
    if (void 0 !== e) {
      var i = e.call(t, r || "default");
      if ("object" != _typeof(i)) return i;
      throw new TypeError("@@toPrimitive must return a primitive value.");
    }
    return ("string" === r ? String : Number)(t);
  }
  function _classCallCheck(instance, Constructor) {
    if (!(instance instanceof Constructor)) {
      throw new TypeError("Cannot call a class as a function");
    }
  }
  function _callSuper(t, o, e) {
    return o = _getPrototypeOf(o), _possibleConstructorReturn(t, _isNativeReflectConstruct() ? Reflect.construct(o, e || [], _getPrototypeOf(t).constructor) : o.apply(t, e));
  }
  function _possibleConstructorReturn(self2, call) {
    if (call && (_typeof(call) === "object" || typeof call === "function")) {
      return call;
    } else if (call !== void 0) {
      throw new TypeError("Derived constructors may only return object or undefined");
    }
    return _assertThisInitialized(self2);
  }
  function _assertThisInitialized(self2) {
    if (self2 === void 0) {
      throw new ReferenceError("this hasn't been initialised - super() hasn't been called");
    }
    return self2;
  }
  function _inherits(subClass, superClass) {
    if (typeof superClass !== "function" && superClass !== null) {
      throw new TypeError("Super expression must either be null or a function");
    }
    subClass.prototype = Object.create(superClass && superClass.prototype, { constructor: { value: subClass, writable: true, configurable: true } });
    Object.defineProperty(subClass, "prototype", { writable: false });
    if (superClass) _setPrototypeOf(subClass, superClass);
  }
  function _wrapNativeSuper(Class) {
    var _cache = typeof Map === "function" ? /* @__PURE__ */ new Map() : void 0;
    _wrapNativeSuper = function _wrapNativeSuper2(Class2) {
      if (Class2 === null || !_isNativeFunction(Class2)) return Class2;
      if (typeof Class2 !== "function") {
        throw new TypeError("Super expression must either be null or a function");
      }
      if (typeof _cache !== "undefined") {
        if (_cache.has(Class2)) return _cache.get(Class2);
        _cache.set(Class2, Wrapper);
      }
      function Wrapper() {
        return _construct(Class2, arguments, _getPrototypeOf(this).constructor);
      }
      Wrapper.prototype = Object.create(Class2.prototype, { constructor: { value: Wrapper, enumerable: false, writable: true, configurable: true } });
      return _setPrototypeOf(Wrapper, Class2);
    };
    return _wrapNativeSuper(Class);
  }
  function _construct(t, e, r) {
    if (_isNativeReflectConstruct()) return Reflect.construct.apply(null, arguments);
    var o = [null];
    o.push.apply(o, e);
    var p = new (t.bind.apply(t, o))();
    return r && _setPrototypeOf(p, r.prototype), p;
  }
  function _isNativeReflectConstruct() {
    try {
      var t = !Boolean.prototype.valueOf.call(Reflect.construct(Boolean, [], function() {
      }));
    } catch (t2) {
    }
    return (_isNativeReflectConstruct = function _isNativeReflectConstruct3() {
      return !!t;
    })();
  }
  function _isNativeFunction(fn) {
    try {
      return Function.toString.call(fn).indexOf("[native code]") !== -1;
    } catch (e) {
      return typeof fn === "function";
    }
  }
  function _setPrototypeOf(o, p) {
    _setPrototypeOf = Object.setPrototypeOf ? Object.setPrototypeOf.bind() : function _setPrototypeOf3(o2, p2) {
      o2.__proto__ = p2;
      return o2;
    };
    return _setPrototypeOf(o, p);
  }
  function _getPrototypeOf(o) {
    _getPrototypeOf = Object.setPrototypeOf ? Object.getPrototypeOf.bind() : function _getPrototypeOf3(o2) {
      return o2.__proto__ || Object.getPrototypeOf(o2);
    };
    return _getPrototypeOf(o);
  }
  var DetailedError = /* @__PURE__ */ (function(_Error) {
    function DetailedError2(message) {
      var _this;
      var causingErr = arguments.length > 1 && arguments[1] !== void 0 ? arguments[1] : null;
      var req = arguments.length > 2 && arguments[2] !== void 0 ? arguments[2] : null;
      var res = arguments.length > 3 && arguments[3] !== void 0 ? arguments[3] : null;
      _classCallCheck(this, DetailedError2);
      _this = _callSuper(this, DetailedError2, [message]);
      _this.originalRequest = req;
      _this.originalResponse = res;
      _this.causingError = causingErr;
      if (causingErr != null) {
        message += ", caused by ".concat(causingErr.toString());
      }
      if (req != null) {
        var requestId = req.getHeader("X-Request-ID") || "n/a";
        var method = req.getMethod();
        var url = req.getURL();
        var status = res ? res.getStatus() : "n/a";
        var body = res ? res.getBody() || "" : "n/a";
        message += ", originated from request (method: ".concat(method, ", url: ").concat(url, ", response code: ").concat(status, ", response text: ").concat(body, ", request id: ").concat(requestId, ")");
      }
      _this.message = message;
      return _this;
    }
    _inherits(DetailedError2, _Error);
    return _createClass(DetailedError2);
  })(/* @__PURE__ */ _wrapNativeSuper(Error));
  var error_default = DetailedError;

  // node_modules/tus-js-client/lib.esm/logger.js
  var isEnabled = false;
  function log(msg) {
    if (!isEnabled) return;
    console.log(msg);
  }

  // node_modules/tus-js-client/lib.esm/noopUrlStorage.js
  function _typeof2(o) {
    "@babel/helpers - typeof";
    return _typeof2 = "function" == typeof Symbol && "symbol" == typeof Symbol.iterator ? function(o2) {
      return typeof o2;
    } : function(o2) {
      return o2 && "function" == typeof Symbol && o2.constructor === Symbol && o2 !== Symbol.prototype ? "symbol" : typeof o2;
    }, _typeof2(o);
  }
  function _classCallCheck2(instance, Constructor) {
    if (!(instance instanceof Constructor)) {
      throw new TypeError("Cannot call a class as a function");
    }
  }
  function _defineProperties2(target, props) {
    for (var i = 0; i < props.length; i++) {
      var descriptor = props[i];
      descriptor.enumerable = descriptor.enumerable || false;
      descriptor.configurable = true;
      if ("value" in descriptor) descriptor.writable = true;
      Object.defineProperty(target, _toPropertyKey2(descriptor.key), descriptor);
    }
  }
  function _createClass2(Constructor, protoProps, staticProps) {
    if (protoProps) _defineProperties2(Constructor.prototype, protoProps);
    if (staticProps) _defineProperties2(Constructor, staticProps);
    Object.defineProperty(Constructor, "prototype", { writable: false });
    return Constructor;
  }
  function _toPropertyKey2(t) {
    var i = _toPrimitive2(t, "string");
    return "symbol" == _typeof2(i) ? i : i + "";
  }
  function _toPrimitive2(t, r) {
    if ("object" != _typeof2(t) || !t) return t;
    var e = t[Symbol.toPrimitive];
    if (void 0 !== e) {
      var i = e.call(t, r || "default");
      if ("object" != _typeof2(i)) return i;
      throw new TypeError("@@toPrimitive must return a primitive value.");
    }
    return ("string" === r ? String : Number)(t);
  }
  var NoopUrlStorage = /* @__PURE__ */ (function() {
    function NoopUrlStorage2() {
      _classCallCheck2(this, NoopUrlStorage2);
    }
    return _createClass2(NoopUrlStorage2, [{
      key: "listAllUploads",
      value: function listAllUploads() {
        return Promise.resolve([]);
      }
    }, {
      key: "findUploadsByFingerprint",
      value: function findUploadsByFingerprint(_fingerprint) {
        return Promise.resolve([]);
      }
    }, {
      key: "removeUpload",
      value: function removeUpload(_urlStorageKey) {
        return Promise.resolve();
      }
    }, {
      key: "addUpload",
      value: function addUpload(_fingerprint, _upload) {
        return Promise.resolve(null);
      }
    }]);
  })();

  // node_modules/js-base64/base64.mjs
  var version = "3.9.7";
  var VERSION = version;
  var _TD = typeof TextDecoder === "function" ? new TextDecoder("utf-8", { ignoreBOM: true }) : void 0;
  var _TE = typeof TextEncoder === "function" ? new TextEncoder() : void 0;
  var b64ch = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
  var b64chs = Array.prototype.slice.call(b64ch);
  var b64tab = ((a) => {
    let tab = {};
    a.forEach((c, i) => tab[c] = i);
    return tab;
  })(b64chs);
  var b64re = /^(?:[A-Za-z\d+\/]{4})*?(?:[A-Za-z\d+\/]{2}(?:==)?|[A-Za-z\d+\/]{3}=?)?$/;
  var _fromCC = String.fromCharCode.bind(String);
  var _mkUriSafe = (src) => src.replace(/=/g, "").replace(/[+\/]/g, (m0) => m0 == "+" ? "-" : "_");
  var _tidyB64 = (s) => s.replace(/[^A-Za-z0-9\+\/]/g, "");
  var btoaPolyfill = (bin) => {
    let u32, c0, c1, c2, asc = "";
    const pad = bin.length % 3;
    for (let i = 0; i < bin.length; ) {
      if ((c0 = bin.charCodeAt(i++)) > 255 || (c1 = bin.charCodeAt(i++)) > 255 || (c2 = bin.charCodeAt(i++)) > 255)
        throw new TypeError("invalid character found");
      u32 = c0 << 16 | c1 << 8 | c2;
      asc += b64chs[u32 >> 18 & 63] + b64chs[u32 >> 12 & 63] + b64chs[u32 >> 6 & 63] + b64chs[u32 & 63];
    }
    return pad ? asc.slice(0, pad - 3) + "===".substring(pad) : asc;
  };
  var _btoa = typeof btoa === "function" ? (bin) => btoa(bin) : btoaPolyfill;
  var _fromUint8Array = typeof Uint8Array.prototype.toBase64 === "function" ? Function.prototype.call.bind(Uint8Array.prototype.toBase64) : (u8a) => {
    const maxargs = 4096;
    let strs = [];
    for (let i = 0, l = u8a.length; i < l; i += maxargs) {
      strs.push(_fromCC.apply(null, u8a.subarray(i, i + maxargs)));
    }
    return _btoa(strs.join(""));
  };
  var fromUint8Array = (u8a, urlsafe = false) => urlsafe ? _mkUriSafe(_fromUint8Array(u8a)) : _fromUint8Array(u8a);
  var cb_utob = (c) => {
    if (c.length < 2) {
      var cc = c.charCodeAt(0);
      return cc < 128 ? c : cc < 2048 ? _fromCC(192 | cc >>> 6) + _fromCC(128 | cc & 63) : _fromCC(224 | cc >>> 12 & 15) + _fromCC(128 | cc >>> 6 & 63) + _fromCC(128 | cc & 63);
    } else {
      var cc = 65536 + (c.charCodeAt(0) - 55296) * 1024 + (c.charCodeAt(1) - 56320);
      return _fromCC(240 | cc >>> 18 & 7) + _fromCC(128 | cc >>> 12 & 63) + _fromCC(128 | cc >>> 6 & 63) + _fromCC(128 | cc & 63);
    }
  };
  var re_utob = /[\uD800-\uDBFF][\uDC00-\uDFFF]|[^\x00-\x7F]/g;
  var utob = (u) => u.replace(re_utob, cb_utob);
  var _encode = _TE ? (s) => _fromUint8Array(_TE.encode(s)) : (s) => _btoa(utob(s));
  var encode = (src, urlsafe = false) => urlsafe ? _mkUriSafe(_encode(src)) : _encode(src);
  var encodeURI = (src) => encode(src, true);
  var re_btou = /[\xC0-\xDF][\x80-\xBF]|[\xE0-\xEF][\x80-\xBF]{2}|[\xF0-\xF7][\x80-\xBF]{3}/g;
  var cb_btou = (cccc) => {
    switch (cccc.length) {
      case 4:
        var cp = (7 & cccc.charCodeAt(0)) << 18 | (63 & cccc.charCodeAt(1)) << 12 | (63 & cccc.charCodeAt(2)) << 6 | 63 & cccc.charCodeAt(3), offset = cp - 65536;
        return _fromCC((offset >>> 10) + 55296) + _fromCC((offset & 1023) + 56320);
      case 3:
        return _fromCC((15 & cccc.charCodeAt(0)) << 12 | (63 & cccc.charCodeAt(1)) << 6 | 63 & cccc.charCodeAt(2));
      default:
        return _fromCC((31 & cccc.charCodeAt(0)) << 6 | 63 & cccc.charCodeAt(1));
    }
  };
  var btou = (b) => b.replace(re_btou, cb_btou);
  var atobPolyfill = (asc) => {
    asc = asc.replace(/\s+/g, "");
    if (!b64re.test(asc))
      throw new TypeError("malformed base64.");
    asc += "==".slice(2 - (asc.length & 3));
    let u24, r1, r2;
    let binArray = [];
    for (let i = 0; i < asc.length; ) {
      u24 = b64tab[asc.charAt(i++)] << 18 | b64tab[asc.charAt(i++)] << 12 | (r1 = b64tab[asc.charAt(i++)]) << 6 | (r2 = b64tab[asc.charAt(i++)]);
      if (r1 === 64) {
        binArray.push(_fromCC(u24 >> 16 & 255));
      } else if (r2 === 64) {
        binArray.push(_fromCC(u24 >> 16 & 255, u24 >> 8 & 255));
      } else {
        binArray.push(_fromCC(u24 >> 16 & 255, u24 >> 8 & 255, u24 & 255));
      }
    }
    return binArray.join("");
  };
  var _atob = typeof atob === "function" ? (asc) => atob(_tidyB64(asc)) : atobPolyfill;
  var _toUint8Array = typeof Uint8Array.fromBase64 === "function" ? (a) => Uint8Array.fromBase64(a) : (a) => {
    const bin = _atob(a), l = bin.length, u8a = new Uint8Array(l);
    for (let i = 0; i < l; i++)
      u8a[i] = bin.charCodeAt(i);
    return u8a;
  };
  var toUint8Array = (a) => _toUint8Array(_unURI(a));
  var _decode = _TD ? (a) => _TD.decode(_toUint8Array(a)) : (a) => btou(_atob(a));
  var _unURI = (a) => _tidyB64(a.replace(/[-_]/g, (m0) => m0 == "-" ? "+" : "/"));
  var decode = (src) => _decode(_unURI(src));
  var isValid = (src) => {
    if (typeof src !== "string")
      return false;
    const s = src.replace(/\s+/g, "").replace(/={0,2}$/, "");
    if (s.length % 4 === 1)
      return false;
    return !/[^\s0-9a-zA-Z\+/]/.test(s) || !/[^\s0-9a-zA-Z\-_]/.test(s);
  };
  var _noEnum = (v) => {
    return {
      value: v,
      enumerable: false,
      writable: true,
      configurable: true
    };
  };
  var extendString = function() {
    const _add = (name, body) => Object.defineProperty(String.prototype, name, _noEnum(body));
    _add("fromBase64", function() {
      return decode(this);
    });
    _add("toBase64", function(urlsafe) {
      return encode(this, urlsafe);
    });
    _add("toBase64URI", function() {
      return encode(this, true);
    });
    _add("toBase64URL", function() {
      return encode(this, true);
    });
    _add("toUint8Array", function() {
      return toUint8Array(this);
    });
  };
  var extendUint8Array = function() {
    const _add = (name, body) => Object.defineProperty(Uint8Array.prototype, name, _noEnum(body));
    _add("toBase64", function(urlsafe) {
      return fromUint8Array(this, urlsafe);
    });
    _add("toBase64URI", function() {
      return fromUint8Array(this, true);
    });
    _add("toBase64URL", function() {
      return fromUint8Array(this, true);
    });
  };
  var extendBuiltins = () => {
    extendString();
    extendUint8Array();
  };
  var gBase64 = {
    version,
    VERSION,
    atob: _atob,
    atobPolyfill,
    btoa: _btoa,
    btoaPolyfill,
    fromBase64: decode,
    toBase64: encode,
    encode,
    encodeURI,
    encodeURL: encodeURI,
    utob,
    btou,
    decode,
    isValid,
    fromUint8Array,
    toUint8Array,
    extendString,
    extendUint8Array,
    extendBuiltins
  };

  // node_modules/tus-js-client/lib.esm/upload.js
  var import_url_parse = __toESM(require_url_parse());

  // node_modules/tus-js-client/lib.esm/uuid.js
  function uuid() {
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function(c) {
      var r = Math.random() * 16 | 0;
      var v = c === "x" ? r : r & 3 | 8;
      return v.toString(16);
    });
  }

  // node_modules/tus-js-client/lib.esm/upload.js
  function _regeneratorRuntime() {
    "use strict";
    _regeneratorRuntime = function _regeneratorRuntime3() {
      return e;
    };
    var t, e = {}, r = Object.prototype, n = r.hasOwnProperty, o = Object.defineProperty || function(t2, e2, r2) {
      t2[e2] = r2.value;
    }, i = "function" == typeof Symbol ? Symbol : {}, a = i.iterator || "@@iterator", c = i.asyncIterator || "@@asyncIterator", u = i.toStringTag || "@@toStringTag";
    function define(t2, e2, r2) {
      return Object.defineProperty(t2, e2, { value: r2, enumerable: true, configurable: true, writable: true }), t2[e2];
    }
    try {
      define({}, "");
    } catch (t2) {
      define = function define2(t3, e2, r2) {
        return t3[e2] = r2;
      };
    }
    function wrap(t2, e2, r2, n2) {
      var i2 = e2 && e2.prototype instanceof Generator ? e2 : Generator, a2 = Object.create(i2.prototype), c2 = new Context(n2 || []);
      return o(a2, "_invoke", { value: makeInvokeMethod(t2, r2, c2) }), a2;
    }
    function tryCatch(t2, e2, r2) {
      try {
        return { type: "normal", arg: t2.call(e2, r2) };
      } catch (t3) {
        return { type: "throw", arg: t3 };
      }
    }
    e.wrap = wrap;
    var h = "suspendedStart", l = "suspendedYield", f = "executing", s = "completed", y = {};
    function Generator() {
    }
    function GeneratorFunction() {
    }
    function GeneratorFunctionPrototype() {
    }
    var p = {};
    define(p, a, function() {
      return this;
    });
    var d = Object.getPrototypeOf, v = d && d(d(values([])));
    v && v !== r && n.call(v, a) && (p = v);
    var g = GeneratorFunctionPrototype.prototype = Generator.prototype = Object.create(p);
    function defineIteratorMethods(t2) {
      ["next", "throw", "return"].forEach(function(e2) {
        define(t2, e2, function(t3) {
          return this._invoke(e2, t3);
        });
      });
    }
    function AsyncIterator(t2, e2) {
      function invoke(r3, o2, i2, a2) {
        var c2 = tryCatch(t2[r3], t2, o2);
        if ("throw" !== c2.type) {
          var u2 = c2.arg, h2 = u2.value;
          return h2 && "object" == _typeof3(h2) && n.call(h2, "__await") ? e2.resolve(h2.__await).then(function(t3) {
            invoke("next", t3, i2, a2);
          }, function(t3) {
            invoke("throw", t3, i2, a2);
          }) : e2.resolve(h2).then(function(t3) {
            u2.value = t3, i2(u2);
          }, function(t3) {
            return invoke("throw", t3, i2, a2);
          });
        }
        a2(c2.arg);
      }
      var r2;
      o(this, "_invoke", { value: function value(t3, n2) {
        function callInvokeWithMethodAndArg() {
          return new e2(function(e3, r3) {
            invoke(t3, n2, e3, r3);
          });
        }
        return r2 = r2 ? r2.then(callInvokeWithMethodAndArg, callInvokeWithMethodAndArg) : callInvokeWithMethodAndArg();
      } });
    }
    function makeInvokeMethod(e2, r2, n2) {
      var o2 = h;
      return function(i2, a2) {
        if (o2 === f) throw Error("Generator is already running");
        if (o2 === s) {
          if ("throw" === i2) throw a2;
          return { value: t, done: true };
        }
        for (n2.method = i2, n2.arg = a2; ; ) {
          var c2 = n2.delegate;
          if (c2) {
            var u2 = maybeInvokeDelegate(c2, n2);
            if (u2) {
              if (u2 === y) continue;
              return u2;
            }
          }
          if ("next" === n2.method) n2.sent = n2._sent = n2.arg;
          else if ("throw" === n2.method) {
            if (o2 === h) throw o2 = s, n2.arg;
            n2.dispatchException(n2.arg);
          } else "return" === n2.method && n2.abrupt("return", n2.arg);
          o2 = f;
          var p2 = tryCatch(e2, r2, n2);
          if ("normal" === p2.type) {
            if (o2 = n2.done ? s : l, p2.arg === y) continue;
            return { value: p2.arg, done: n2.done };
          }
          "throw" === p2.type && (o2 = s, n2.method = "throw", n2.arg = p2.arg);
        }
      };
    }
    function maybeInvokeDelegate(e2, r2) {
      var n2 = r2.method, o2 = e2.iterator[n2];
      if (o2 === t) return r2.delegate = null, "throw" === n2 && e2.iterator["return"] && (r2.method = "return", r2.arg = t, maybeInvokeDelegate(e2, r2), "throw" === r2.method) || "return" !== n2 && (r2.method = "throw", r2.arg = new TypeError("The iterator does not provide a '" + n2 + "' method")), y;
      var i2 = tryCatch(o2, e2.iterator, r2.arg);
      if ("throw" === i2.type) return r2.method = "throw", r2.arg = i2.arg, r2.delegate = null, y;
      var a2 = i2.arg;
      return a2 ? a2.done ? (r2[e2.resultName] = a2.value, r2.next = e2.nextLoc, "return" !== r2.method && (r2.method = "next", r2.arg = t), r2.delegate = null, y) : a2 : (r2.method = "throw", r2.arg = new TypeError("iterator result is not an object"), r2.delegate = null, y);
    }
    function pushTryEntry(t2) {
      var e2 = { tryLoc: t2[0] };
      1 in t2 && (e2.catchLoc = t2[1]), 2 in t2 && (e2.finallyLoc = t2[2], e2.afterLoc = t2[3]), this.tryEntries.push(e2);
    }
    function resetTryEntry(t2) {
      var e2 = t2.completion || {};
      e2.type = "normal", delete e2.arg, t2.completion = e2;
    }
    function Context(t2) {
      this.tryEntries = [{ tryLoc: "root" }], t2.forEach(pushTryEntry, this), this.reset(true);
    }
    function values(e2) {
      if (e2 || "" === e2) {
        var r2 = e2[a];
        if (r2) return r2.call(e2);
        if ("function" == typeof e2.next) return e2;
        if (!isNaN(e2.length)) {
          var o2 = -1, i2 = function next() {
            for (; ++o2 < e2.length; ) if (n.call(e2, o2)) return next.value = e2[o2], next.done = false, next;
            return next.value = t, next.done = true, next;
          };
          return i2.next = i2;
        }
      }
      throw new TypeError(_typeof3(e2) + " is not iterable");
    }
    return GeneratorFunction.prototype = GeneratorFunctionPrototype, o(g, "constructor", { value: GeneratorFunctionPrototype, configurable: true }), o(GeneratorFunctionPrototype, "constructor", { value: GeneratorFunction, configurable: true }), GeneratorFunction.displayName = define(GeneratorFunctionPrototype, u, "GeneratorFunction"), e.isGeneratorFunction = function(t2) {
      var e2 = "function" == typeof t2 && t2.constructor;
      return !!e2 && (e2 === GeneratorFunction || "GeneratorFunction" === (e2.displayName || e2.name));
    }, e.mark = function(t2) {
      return Object.setPrototypeOf ? Object.setPrototypeOf(t2, GeneratorFunctionPrototype) : (t2.__proto__ = GeneratorFunctionPrototype, define(t2, u, "GeneratorFunction")), t2.prototype = Object.create(g), t2;
    }, e.awrap = function(t2) {
      return { __await: t2 };
    }, defineIteratorMethods(AsyncIterator.prototype), define(AsyncIterator.prototype, c, function() {
      return this;
    }), e.AsyncIterator = AsyncIterator, e.async = function(t2, r2, n2, o2, i2) {
      void 0 === i2 && (i2 = Promise);
      var a2 = new AsyncIterator(wrap(t2, r2, n2, o2), i2);
      return e.isGeneratorFunction(r2) ? a2 : a2.next().then(function(t3) {
        return t3.done ? t3.value : a2.next();
      });
    }, defineIteratorMethods(g), define(g, u, "Generator"), define(g, a, function() {
      return this;
    }), define(g, "toString", function() {
      return "[object Generator]";
    }), e.keys = function(t2) {
      var e2 = Object(t2), r2 = [];
      for (var n2 in e2) r2.push(n2);
      return r2.reverse(), function next() {
        for (; r2.length; ) {
          var t3 = r2.pop();
          if (t3 in e2) return next.value = t3, next.done = false, next;
        }
        return next.done = true, next;
      };
    }, e.values = values, Context.prototype = { constructor: Context, reset: function reset(e2) {
      if (this.prev = 0, this.next = 0, this.sent = this._sent = t, this.done = false, this.delegate = null, this.method = "next", this.arg = t, this.tryEntries.forEach(resetTryEntry), !e2) for (var r2 in this) "t" === r2.charAt(0) && n.call(this, r2) && !isNaN(+r2.slice(1)) && (this[r2] = t);
    }, stop: function stop() {
      this.done = true;
      var t2 = this.tryEntries[0].completion;
      if ("throw" === t2.type) throw t2.arg;
      return this.rval;
    }, dispatchException: function dispatchException(e2) {
      if (this.done) throw e2;
      var r2 = this;
      function handle(n2, o3) {
        return a2.type = "throw", a2.arg = e2, r2.next = n2, o3 && (r2.method = "next", r2.arg = t), !!o3;
      }
      for (var o2 = this.tryEntries.length - 1; o2 >= 0; --o2) {
        var i2 = this.tryEntries[o2], a2 = i2.completion;
        if ("root" === i2.tryLoc) return handle("end");
        if (i2.tryLoc <= this.prev) {
          var c2 = n.call(i2, "catchLoc"), u2 = n.call(i2, "finallyLoc");
          if (c2 && u2) {
            if (this.prev < i2.catchLoc) return handle(i2.catchLoc, true);
            if (this.prev < i2.finallyLoc) return handle(i2.finallyLoc);
          } else if (c2) {
            if (this.prev < i2.catchLoc) return handle(i2.catchLoc, true);
          } else {
            if (!u2) throw Error("try statement without catch or finally");
            if (this.prev < i2.finallyLoc) return handle(i2.finallyLoc);
          }
        }
      }
    }, abrupt: function abrupt(t2, e2) {
      for (var r2 = this.tryEntries.length - 1; r2 >= 0; --r2) {
        var o2 = this.tryEntries[r2];
        if (o2.tryLoc <= this.prev && n.call(o2, "finallyLoc") && this.prev < o2.finallyLoc) {
          var i2 = o2;
          break;
        }
      }
      i2 && ("break" === t2 || "continue" === t2) && i2.tryLoc <= e2 && e2 <= i2.finallyLoc && (i2 = null);
      var a2 = i2 ? i2.completion : {};
      return a2.type = t2, a2.arg = e2, i2 ? (this.method = "next", this.next = i2.finallyLoc, y) : this.complete(a2);
    }, complete: function complete(t2, e2) {
      if ("throw" === t2.type) throw t2.arg;
      return "break" === t2.type || "continue" === t2.type ? this.next = t2.arg : "return" === t2.type ? (this.rval = this.arg = t2.arg, this.method = "return", this.next = "end") : "normal" === t2.type && e2 && (this.next = e2), y;
    }, finish: function finish(t2) {
      for (var e2 = this.tryEntries.length - 1; e2 >= 0; --e2) {
        var r2 = this.tryEntries[e2];
        if (r2.finallyLoc === t2) return this.complete(r2.completion, r2.afterLoc), resetTryEntry(r2), y;
      }
    }, "catch": function _catch(t2) {
      for (var e2 = this.tryEntries.length - 1; e2 >= 0; --e2) {
        var r2 = this.tryEntries[e2];
        if (r2.tryLoc === t2) {
          var n2 = r2.completion;
          if ("throw" === n2.type) {
            var o2 = n2.arg;
            resetTryEntry(r2);
          }
          return o2;
        }
      }
      throw Error("illegal catch attempt");
    }, delegateYield: function delegateYield(e2, r2, n2) {
      return this.delegate = { iterator: values(e2), resultName: r2, nextLoc: n2 }, "next" === this.method && (this.arg = t), y;
    } }, e;
  }
  function asyncGeneratorStep(gen, resolve, reject, _next, _throw, key2, arg) {
    try {
      var info = gen[key2](arg);
      var value = info.value;
    } catch (error) {
      reject(error);
      return;
    }
    if (info.done) {
      resolve(value);
    } else {
      Promise.resolve(value).then(_next, _throw);
    }
  }
  function _asyncToGenerator(fn) {
    return function() {
      var self2 = this, args = arguments;
      return new Promise(function(resolve, reject) {
        var gen = fn.apply(self2, args);
        function _next(value) {
          asyncGeneratorStep(gen, resolve, reject, _next, _throw, "next", value);
        }
        function _throw(err) {
          asyncGeneratorStep(gen, resolve, reject, _next, _throw, "throw", err);
        }
        _next(void 0);
      });
    };
  }
  function _slicedToArray(arr, i) {
    return _arrayWithHoles(arr) || _iterableToArrayLimit(arr, i) || _unsupportedIterableToArray(arr, i) || _nonIterableRest();
  }
  function _nonIterableRest() {
    throw new TypeError("Invalid attempt to destructure non-iterable instance.\nIn order to be iterable, non-array objects must have a [Symbol.iterator]() method.");
  }
  function _iterableToArrayLimit(r, l) {
    var t = null == r ? null : "undefined" != typeof Symbol && r[Symbol.iterator] || r["@@iterator"];
    if (null != t) {
      var e, n, i, u, a = [], f = true, o = false;
      try {
        if (i = (t = t.call(r)).next, 0 === l) {
          if (Object(t) !== t) return;
          f = false;
        } else for (; !(f = (e = i.call(t)).done) && (a.push(e.value), a.length !== l); f = true) ;
      } catch (r2) {
        o = true, n = r2;
      } finally {
        try {
          if (!f && null != t["return"] && (u = t["return"](), Object(u) !== u)) return;
        } finally {
          if (o) throw n;
        }
      }
      return a;
    }
  }
  function _arrayWithHoles(arr) {
    if (Array.isArray(arr)) return arr;
  }
  function _typeof3(o) {
    "@babel/helpers - typeof";
    return _typeof3 = "function" == typeof Symbol && "symbol" == typeof Symbol.iterator ? function(o2) {
      return typeof o2;
    } : function(o2) {
      return o2 && "function" == typeof Symbol && o2.constructor === Symbol && o2 !== Symbol.prototype ? "symbol" : typeof o2;
    }, _typeof3(o);
  }
  function _createForOfIteratorHelper(o, allowArrayLike) {
    var it = typeof Symbol !== "undefined" && o[Symbol.iterator] || o["@@iterator"];
    if (!it) {
      if (Array.isArray(o) || (it = _unsupportedIterableToArray(o)) || allowArrayLike && o && typeof o.length === "number") {
        if (it) o = it;
        var i = 0;
        var F = function F2() {
        };
        return { s: F, n: function n() {
          if (i >= o.length) return { done: true };
          return { done: false, value: o[i++] };
        }, e: function e(_e) {
          throw _e;
        }, f: F };
      }
      throw new TypeError("Invalid attempt to iterate non-iterable instance.\nIn order to be iterable, non-array objects must have a [Symbol.iterator]() method.");
    }
    var normalCompletion = true, didErr = false, err;
    return { s: function s() {
      it = it.call(o);
    }, n: function n() {
      var step = it.next();
      normalCompletion = step.done;
      return step;
    }, e: function e(_e2) {
      didErr = true;
      err = _e2;
    }, f: function f() {
      try {
        if (!normalCompletion && it["return"] != null) it["return"]();
      } finally {
        if (didErr) throw err;
      }
    } };
  }
  function _unsupportedIterableToArray(o, minLen) {
    if (!o) return;
    if (typeof o === "string") return _arrayLikeToArray(o, minLen);
    var n = Object.prototype.toString.call(o).slice(8, -1);
    if (n === "Object" && o.constructor) n = o.constructor.name;
    if (n === "Map" || n === "Set") return Array.from(o);
    if (n === "Arguments" || /^(?:Ui|I)nt(?:8|16|32)(?:Clamped)?Array$/.test(n)) return _arrayLikeToArray(o, minLen);
  }
  function _arrayLikeToArray(arr, len2) {
    if (len2 == null || len2 > arr.length) len2 = arr.length;
    for (var i = 0, arr2 = new Array(len2); i < len2; i++) arr2[i] = arr[i];
    return arr2;
  }
  function ownKeys(e, r) {
    var t = Object.keys(e);
    if (Object.getOwnPropertySymbols) {
      var o = Object.getOwnPropertySymbols(e);
      r && (o = o.filter(function(r2) {
        return Object.getOwnPropertyDescriptor(e, r2).enumerable;
      })), t.push.apply(t, o);
    }
    return t;
  }
  function _objectSpread(e) {
    for (var r = 1; r < arguments.length; r++) {
      var t = null != arguments[r] ? arguments[r] : {};
      r % 2 ? ownKeys(Object(t), true).forEach(function(r2) {
        _defineProperty(e, r2, t[r2]);
      }) : Object.getOwnPropertyDescriptors ? Object.defineProperties(e, Object.getOwnPropertyDescriptors(t)) : ownKeys(Object(t)).forEach(function(r2) {
        Object.defineProperty(e, r2, Object.getOwnPropertyDescriptor(t, r2));
      });
    }
    return e;
  }
  function _defineProperty(obj, key2, value) {
    key2 = _toPropertyKey3(key2);
    if (key2 in obj) {
      Object.defineProperty(obj, key2, { value, enumerable: true, configurable: true, writable: true });
    } else {
      obj[key2] = value;
    }
    return obj;
  }
  function _classCallCheck3(instance, Constructor) {
    if (!(instance instanceof Constructor)) {
      throw new TypeError("Cannot call a class as a function");
    }
  }
  function _defineProperties3(target, props) {
    for (var i = 0; i < props.length; i++) {
      var descriptor = props[i];
      descriptor.enumerable = descriptor.enumerable || false;
      descriptor.configurable = true;
      if ("value" in descriptor) descriptor.writable = true;
      Object.defineProperty(target, _toPropertyKey3(descriptor.key), descriptor);
    }
  }
  function _createClass3(Constructor, protoProps, staticProps) {
    if (protoProps) _defineProperties3(Constructor.prototype, protoProps);
    if (staticProps) _defineProperties3(Constructor, staticProps);
    Object.defineProperty(Constructor, "prototype", { writable: false });
    return Constructor;
  }
  function _toPropertyKey3(t) {
    var i = _toPrimitive3(t, "string");
    return "symbol" == _typeof3(i) ? i : i + "";
  }
  function _toPrimitive3(t, r) {
    if ("object" != _typeof3(t) || !t) return t;
    var e = t[Symbol.toPrimitive];
    if (void 0 !== e) {
      var i = e.call(t, r || "default");
      if ("object" != _typeof3(i)) return i;
      throw new TypeError("@@toPrimitive must return a primitive value.");
    }
    return ("string" === r ? String : Number)(t);
  }
  var PROTOCOL_TUS_V1 = "tus-v1";
  var PROTOCOL_IETF_DRAFT_03 = "ietf-draft-03";
  var PROTOCOL_IETF_DRAFT_05 = "ietf-draft-05";
  var defaultOptions = {
    endpoint: null,
    uploadUrl: null,
    metadata: {},
    metadataForPartialUploads: {},
    fingerprint: null,
    uploadSize: null,
    onProgress: null,
    onChunkComplete: null,
    onSuccess: null,
    onError: null,
    onUploadUrlAvailable: null,
    overridePatchMethod: false,
    headers: {},
    addRequestId: false,
    onBeforeRequest: null,
    onAfterResponse: null,
    onShouldRetry: defaultOnShouldRetry,
    chunkSize: Number.POSITIVE_INFINITY,
    retryDelays: [0, 1e3, 3e3, 5e3],
    parallelUploads: 1,
    parallelUploadBoundaries: null,
    storeFingerprintForResuming: true,
    removeFingerprintOnSuccess: false,
    uploadLengthDeferred: false,
    uploadDataDuringCreation: false,
    urlStorage: null,
    fileReader: null,
    httpStack: null,
    protocol: PROTOCOL_TUS_V1
  };
  var BaseUpload = /* @__PURE__ */ (function() {
    function BaseUpload2(file, options) {
      _classCallCheck3(this, BaseUpload2);
      if ("resume" in options) {
        console.log("tus: The `resume` option has been removed in tus-js-client v2. Please use the URL storage API instead.");
      }
      this.options = options;
      this.options.chunkSize = Number(this.options.chunkSize);
      this._urlStorage = this.options.urlStorage;
      this.file = file;
      this.url = null;
      this._req = null;
      this._fingerprint = null;
      this._urlStorageKey = null;
      this._offset = null;
      this._aborted = false;
      this._size = null;
      this._source = null;
      this._retryAttempt = 0;
      this._retryTimeout = null;
      this._offsetBeforeRetry = 0;
      this._parallelUploads = null;
      this._parallelUploadUrls = null;
    }
    return _createClass3(BaseUpload2, [{
      key: "findPreviousUploads",
      value: function findPreviousUploads() {
        var _this = this;
        return this.options.fingerprint(this.file, this.options).then(function(fingerprint2) {
          return _this._urlStorage.findUploadsByFingerprint(fingerprint2);
        });
      }
    }, {
      key: "resumeFromPreviousUpload",
      value: function resumeFromPreviousUpload(previousUpload) {
        this.url = previousUpload.uploadUrl || null;
        this._parallelUploadUrls = previousUpload.parallelUploadUrls || null;
        this._urlStorageKey = previousUpload.urlStorageKey;
      }
    }, {
      key: "start",
      value: function start() {
        var _this2 = this;
        var file = this.file;
        if (!file) {
          this._emitError(new Error("tus: no file or stream to upload provided"));
          return;
        }
        if (![PROTOCOL_TUS_V1, PROTOCOL_IETF_DRAFT_03, PROTOCOL_IETF_DRAFT_05].includes(this.options.protocol)) {
          this._emitError(new Error("tus: unsupported protocol ".concat(this.options.protocol)));
          return;
        }
        if (!this.options.endpoint && !this.options.uploadUrl && !this.url) {
          this._emitError(new Error("tus: neither an endpoint or an upload URL is provided"));
          return;
        }
        var retryDelays = this.options.retryDelays;
        if (retryDelays != null && Object.prototype.toString.call(retryDelays) !== "[object Array]") {
          this._emitError(new Error("tus: the `retryDelays` option must either be an array or null"));
          return;
        }
        if (this.options.parallelUploads > 1) {
          for (var _i = 0, _arr = ["uploadUrl", "uploadSize", "uploadLengthDeferred"]; _i < _arr.length; _i++) {
            var optionName = _arr[_i];
            if (this.options[optionName]) {
              this._emitError(new Error("tus: cannot use the ".concat(optionName, " option when parallelUploads is enabled")));
              return;
            }
          }
        }
        if (this.options.parallelUploadBoundaries) {
          if (this.options.parallelUploads <= 1) {
            this._emitError(new Error("tus: cannot use the `parallelUploadBoundaries` option when `parallelUploads` is disabled"));
            return;
          }
          if (this.options.parallelUploads !== this.options.parallelUploadBoundaries.length) {
            this._emitError(new Error("tus: the `parallelUploadBoundaries` must have the same length as the value of `parallelUploads`"));
            return;
          }
        }
        this.options.fingerprint(file, this.options).then(function(fingerprint2) {
          if (fingerprint2 == null) {
            log("No fingerprint was calculated meaning that the upload cannot be stored in the URL storage.");
          } else {
            log("Calculated fingerprint: ".concat(fingerprint2));
          }
          _this2._fingerprint = fingerprint2;
          if (_this2._source) {
            return _this2._source;
          }
          return _this2.options.fileReader.openFile(file, _this2.options.chunkSize);
        }).then(function(source) {
          _this2._source = source;
          if (_this2.options.uploadLengthDeferred) {
            _this2._size = null;
          } else if (_this2.options.uploadSize != null) {
            _this2._size = Number(_this2.options.uploadSize);
            if (Number.isNaN(_this2._size)) {
              _this2._emitError(new Error("tus: cannot convert `uploadSize` option into a number"));
              return;
            }
          } else {
            _this2._size = _this2._source.size;
            if (_this2._size == null) {
              _this2._emitError(new Error("tus: cannot automatically derive upload's size from input. Specify it manually using the `uploadSize` option or use the `uploadLengthDeferred` option"));
              return;
            }
          }
          if (_this2.options.parallelUploads > 1 || _this2._parallelUploadUrls != null) {
            _this2._startParallelUpload();
          } else {
            _this2._startSingleUpload();
          }
        })["catch"](function(err) {
          _this2._emitError(err);
        });
      }
      /**
       * Initiate the uploading procedure for a parallelized upload, where one file is split into
       * multiple request which are run in parallel.
       *
       * @api private
       */
    }, {
      key: "_startParallelUpload",
      value: function _startParallelUpload() {
        var _this$options$paralle, _this3 = this;
        var totalSize = this._size;
        var totalProgress = 0;
        this._parallelUploads = [];
        var partCount = this._parallelUploadUrls != null ? this._parallelUploadUrls.length : this.options.parallelUploads;
        var parts = (_this$options$paralle = this.options.parallelUploadBoundaries) !== null && _this$options$paralle !== void 0 ? _this$options$paralle : splitSizeIntoParts(this._source.size, partCount);
        if (this._parallelUploadUrls) {
          parts.forEach(function(part, index) {
            part.uploadUrl = _this3._parallelUploadUrls[index] || null;
          });
        }
        this._parallelUploadUrls = new Array(parts.length);
        var uploads2 = parts.map(function(part, index) {
          var lastPartProgress = 0;
          return _this3._source.slice(part.start, part.end).then(function(_ref) {
            var value = _ref.value;
            return new Promise(function(resolve, reject) {
              var options = _objectSpread(_objectSpread({}, _this3.options), {}, {
                // If available, the partial upload should be resumed from a previous URL.
                uploadUrl: part.uploadUrl || null,
                // We take manually care of resuming for partial uploads, so they should
                // not be stored in the URL storage.
                storeFingerprintForResuming: false,
                removeFingerprintOnSuccess: false,
                // Reset the parallelUploads option to not cause recursion.
                parallelUploads: 1,
                // Reset this option as we are not doing a parallel upload.
                parallelUploadBoundaries: null,
                metadata: _this3.options.metadataForPartialUploads,
                // Add the header to indicate the this is a partial upload.
                headers: _objectSpread(_objectSpread({}, _this3.options.headers), {}, {
                  "Upload-Concat": "partial"
                }),
                // Reject or resolve the promise if the upload errors or completes.
                onSuccess: resolve,
                onError: reject,
                // Based in the progress for this partial upload, calculate the progress
                // for the entire final upload.
                onProgress: function onProgress(newPartProgress) {
                  totalProgress = totalProgress - lastPartProgress + newPartProgress;
                  lastPartProgress = newPartProgress;
                  _this3._emitProgress(totalProgress, totalSize);
                },
                // Wait until every partial upload has an upload URL, so we can add
                // them to the URL storage.
                onUploadUrlAvailable: function onUploadUrlAvailable() {
                  _this3._parallelUploadUrls[index] = upload.url;
                  if (_this3._parallelUploadUrls.filter(function(u) {
                    return Boolean(u);
                  }).length === parts.length) {
                    _this3._saveUploadInUrlStorage();
                  }
                }
              });
              var upload = new BaseUpload2(value, options);
              upload.start();
              _this3._parallelUploads.push(upload);
            });
          });
        });
        var req;
        Promise.all(uploads2).then(function() {
          req = _this3._openRequest("POST", _this3.options.endpoint);
          req.setHeader("Upload-Concat", "final;".concat(_this3._parallelUploadUrls.join(" ")));
          var metadata = encodeMetadata(_this3.options.metadata);
          if (metadata !== "") {
            req.setHeader("Upload-Metadata", metadata);
          }
          return _this3._sendRequest(req, null);
        }).then(function(res) {
          if (!inStatusCategory(res.getStatus(), 200)) {
            _this3._emitHttpError(req, res, "tus: unexpected response while creating upload");
            return;
          }
          var location = res.getHeader("Location");
          if (location == null) {
            _this3._emitHttpError(req, res, "tus: invalid or missing Location header");
            return;
          }
          _this3.url = resolveUrl(_this3.options.endpoint, location);
          log("Created upload at ".concat(_this3.url));
          _this3._emitSuccess(res);
        })["catch"](function(err) {
          _this3._emitError(err);
        });
      }
      /**
       * Initiate the uploading procedure for a non-parallel upload. Here the entire file is
       * uploaded in a sequential matter.
       *
       * @api private
       */
    }, {
      key: "_startSingleUpload",
      value: function _startSingleUpload() {
        this._aborted = false;
        if (this.url != null) {
          log("Resuming upload from previous URL: ".concat(this.url));
          this._resumeUpload();
          return;
        }
        if (this.options.uploadUrl != null) {
          log("Resuming upload from provided URL: ".concat(this.options.uploadUrl));
          this.url = this.options.uploadUrl;
          this._resumeUpload();
          return;
        }
        log("Creating a new upload");
        this._createUpload();
      }
      /**
       * Abort any running request and stop the current upload. After abort is called, no event
       * handler will be invoked anymore. You can use the `start` method to resume the upload
       * again.
       * If `shouldTerminate` is true, the `terminate` function will be called to remove the
       * current upload from the server.
       *
       * @param {boolean} shouldTerminate True if the upload should be deleted from the server.
       * @return {Promise} The Promise will be resolved/rejected when the requests finish.
       */
    }, {
      key: "abort",
      value: function abort(shouldTerminate) {
        var _this4 = this;
        if (this._parallelUploads != null) {
          var _iterator = _createForOfIteratorHelper(this._parallelUploads), _step;
          try {
            for (_iterator.s(); !(_step = _iterator.n()).done; ) {
              var upload = _step.value;
              upload.abort(shouldTerminate);
            }
          } catch (err) {
            _iterator.e(err);
          } finally {
            _iterator.f();
          }
        }
        if (this._req !== null) {
          this._req.abort();
        }
        this._aborted = true;
        if (this._retryTimeout != null) {
          clearTimeout(this._retryTimeout);
          this._retryTimeout = null;
        }
        if (!shouldTerminate || this.url == null) {
          return Promise.resolve();
        }
        return BaseUpload2.terminate(this.url, this.options).then(function() {
          return _this4._removeFromUrlStorage();
        });
      }
    }, {
      key: "_emitHttpError",
      value: function _emitHttpError(req, res, message, causingErr) {
        this._emitError(new error_default(message, causingErr, req, res));
      }
    }, {
      key: "_emitError",
      value: function _emitError(err) {
        var _this5 = this;
        if (this._aborted) return;
        if (this.options.retryDelays != null) {
          var shouldResetDelays = this._offset != null && this._offset > this._offsetBeforeRetry;
          if (shouldResetDelays) {
            this._retryAttempt = 0;
          }
          if (shouldRetry(err, this._retryAttempt, this.options)) {
            var delay = this.options.retryDelays[this._retryAttempt++];
            this._offsetBeforeRetry = this._offset;
            this._retryTimeout = setTimeout(function() {
              _this5.start();
            }, delay);
            return;
          }
        }
        if (typeof this.options.onError === "function") {
          this.options.onError(err);
        } else {
          throw err;
        }
      }
      /**
       * Publishes notification if the upload has been successfully completed.
       *
       * @param {object} lastResponse Last HTTP response.
       * @api private
       */
    }, {
      key: "_emitSuccess",
      value: function _emitSuccess(lastResponse) {
        if (this.options.removeFingerprintOnSuccess) {
          this._removeFromUrlStorage();
        }
        if (typeof this.options.onSuccess === "function") {
          this.options.onSuccess({
            lastResponse
          });
        }
      }
      /**
       * Publishes notification when data has been sent to the server. This
       * data may not have been accepted by the server yet.
       *
       * @param {number} bytesSent  Number of bytes sent to the server.
       * @param {number} bytesTotal Total number of bytes to be sent to the server.
       * @api private
       */
    }, {
      key: "_emitProgress",
      value: function _emitProgress(bytesSent, bytesTotal) {
        if (typeof this.options.onProgress === "function") {
          this.options.onProgress(bytesSent, bytesTotal);
        }
      }
      /**
       * Publishes notification when a chunk of data has been sent to the server
       * and accepted by the server.
       * @param {number} chunkSize  Size of the chunk that was accepted by the server.
       * @param {number} bytesAccepted Total number of bytes that have been
       *                                accepted by the server.
       * @param {number} bytesTotal Total number of bytes to be sent to the server.
       * @api private
       */
    }, {
      key: "_emitChunkComplete",
      value: function _emitChunkComplete(chunkSize, bytesAccepted, bytesTotal) {
        if (typeof this.options.onChunkComplete === "function") {
          this.options.onChunkComplete(chunkSize, bytesAccepted, bytesTotal);
        }
      }
      /**
       * Create a new upload using the creation extension by sending a POST
       * request to the endpoint. After successful creation the file will be
       * uploaded
       *
       * @api private
       */
    }, {
      key: "_createUpload",
      value: function _createUpload() {
        var _this6 = this;
        if (!this.options.endpoint) {
          this._emitError(new Error("tus: unable to create upload because no endpoint is provided"));
          return;
        }
        var req = this._openRequest("POST", this.options.endpoint);
        if (this.options.uploadLengthDeferred) {
          req.setHeader("Upload-Defer-Length", "1");
        } else {
          req.setHeader("Upload-Length", "".concat(this._size));
        }
        var metadata = encodeMetadata(this.options.metadata);
        if (metadata !== "") {
          req.setHeader("Upload-Metadata", metadata);
        }
        var promise;
        if (this.options.uploadDataDuringCreation && !this.options.uploadLengthDeferred) {
          this._offset = 0;
          promise = this._addChunkToRequest(req);
        } else {
          if (this.options.protocol === PROTOCOL_IETF_DRAFT_03 || this.options.protocol === PROTOCOL_IETF_DRAFT_05) {
            req.setHeader("Upload-Complete", "?0");
          }
          promise = this._sendRequest(req, null);
        }
        promise.then(function(res) {
          if (!inStatusCategory(res.getStatus(), 200)) {
            _this6._emitHttpError(req, res, "tus: unexpected response while creating upload");
            return;
          }
          var location = res.getHeader("Location");
          if (location == null) {
            _this6._emitHttpError(req, res, "tus: invalid or missing Location header");
            return;
          }
          _this6.url = resolveUrl(_this6.options.endpoint, location);
          log("Created upload at ".concat(_this6.url));
          if (typeof _this6.options.onUploadUrlAvailable === "function") {
            _this6.options.onUploadUrlAvailable();
          }
          if (_this6._size === 0) {
            _this6._emitSuccess(res);
            _this6._source.close();
            return;
          }
          _this6._saveUploadInUrlStorage().then(function() {
            if (_this6.options.uploadDataDuringCreation) {
              _this6._handleUploadResponse(req, res);
            } else {
              _this6._offset = 0;
              _this6._performUpload();
            }
          });
        })["catch"](function(err) {
          _this6._emitHttpError(req, null, "tus: failed to create upload", err);
        });
      }
      /*
       * Try to resume an existing upload. First a HEAD request will be sent
       * to retrieve the offset. If the request fails a new upload will be
       * created. In the case of a successful response the file will be uploaded.
       *
       * @api private
       */
    }, {
      key: "_resumeUpload",
      value: function _resumeUpload() {
        var _this7 = this;
        var req = this._openRequest("HEAD", this.url);
        var promise = this._sendRequest(req, null);
        promise.then(function(res) {
          var status = res.getStatus();
          if (!inStatusCategory(status, 200)) {
            if (status === 423) {
              _this7._emitHttpError(req, res, "tus: upload is currently locked; retry later");
              return;
            }
            if (inStatusCategory(status, 400)) {
              _this7._removeFromUrlStorage();
            }
            if (!_this7.options.endpoint) {
              _this7._emitHttpError(req, res, "tus: unable to resume upload (new upload cannot be created without an endpoint)");
              return;
            }
            _this7.url = null;
            _this7._createUpload();
            return;
          }
          var offset = Number.parseInt(res.getHeader("Upload-Offset"), 10);
          if (Number.isNaN(offset)) {
            _this7._emitHttpError(req, res, "tus: invalid or missing offset value");
            return;
          }
          var length = Number.parseInt(res.getHeader("Upload-Length"), 10);
          if (Number.isNaN(length) && !_this7.options.uploadLengthDeferred && _this7.options.protocol === PROTOCOL_TUS_V1) {
            _this7._emitHttpError(req, res, "tus: invalid or missing length value");
            return;
          }
          if (typeof _this7.options.onUploadUrlAvailable === "function") {
            _this7.options.onUploadUrlAvailable();
          }
          _this7._saveUploadInUrlStorage().then(function() {
            if (offset === length) {
              _this7._emitProgress(length, length);
              _this7._emitSuccess(res);
              return;
            }
            _this7._offset = offset;
            _this7._performUpload();
          });
        })["catch"](function(err) {
          _this7._emitHttpError(req, null, "tus: failed to resume upload", err);
        });
      }
      /**
       * Start uploading the file using PATCH requests. The file will be divided
       * into chunks as specified in the chunkSize option. During the upload
       * the onProgress event handler may be invoked multiple times.
       *
       * @api private
       */
    }, {
      key: "_performUpload",
      value: function _performUpload() {
        var _this8 = this;
        if (this._aborted) {
          return;
        }
        var req;
        if (this.options.overridePatchMethod) {
          req = this._openRequest("POST", this.url);
          req.setHeader("X-HTTP-Method-Override", "PATCH");
        } else {
          req = this._openRequest("PATCH", this.url);
        }
        req.setHeader("Upload-Offset", "".concat(this._offset));
        var promise = this._addChunkToRequest(req);
        promise.then(function(res) {
          if (!inStatusCategory(res.getStatus(), 200)) {
            _this8._emitHttpError(req, res, "tus: unexpected response while uploading chunk");
            return;
          }
          _this8._handleUploadResponse(req, res);
        })["catch"](function(err) {
          if (_this8._aborted) {
            return;
          }
          _this8._emitHttpError(req, null, "tus: failed to upload chunk at offset ".concat(_this8._offset), err);
        });
      }
      /**
       * _addChunktoRequest reads a chunk from the source and sends it using the
       * supplied request object. It will not handle the response.
       *
       * @api private
       */
    }, {
      key: "_addChunkToRequest",
      value: function _addChunkToRequest(req) {
        var _this9 = this;
        var start = this._offset;
        var end = this._offset + this.options.chunkSize;
        req.setProgressHandler(function(bytesSent) {
          _this9._emitProgress(start + bytesSent, _this9._size);
        });
        if (this.options.protocol === PROTOCOL_TUS_V1) {
          req.setHeader("Content-Type", "application/offset+octet-stream");
        } else if (this.options.protocol === PROTOCOL_IETF_DRAFT_05) {
          req.setHeader("Content-Type", "application/partial-upload");
        }
        if ((end === Number.POSITIVE_INFINITY || end > this._size) && !this.options.uploadLengthDeferred) {
          end = this._size;
        }
        return this._source.slice(start, end).then(function(_ref2) {
          var value = _ref2.value, done = _ref2.done;
          var valueSize = value !== null && value !== void 0 && value.size ? value.size : 0;
          if (_this9.options.uploadLengthDeferred && done) {
            _this9._size = _this9._offset + valueSize;
            req.setHeader("Upload-Length", "".concat(_this9._size));
          }
          var newSize = _this9._offset + valueSize;
          if (!_this9.options.uploadLengthDeferred && done && newSize !== _this9._size) {
            return Promise.reject(new Error("upload was configured with a size of ".concat(_this9._size, " bytes, but the source is done after ").concat(newSize, " bytes")));
          }
          if (value === null) {
            return _this9._sendRequest(req);
          }
          if (_this9.options.protocol === PROTOCOL_IETF_DRAFT_03 || _this9.options.protocol === PROTOCOL_IETF_DRAFT_05) {
            req.setHeader("Upload-Complete", done ? "?1" : "?0");
          }
          _this9._emitProgress(_this9._offset, _this9._size);
          return _this9._sendRequest(req, value);
        });
      }
      /**
       * _handleUploadResponse is used by requests that haven been sent using _addChunkToRequest
       * and already have received a response.
       *
       * @api private
       */
    }, {
      key: "_handleUploadResponse",
      value: function _handleUploadResponse(req, res) {
        var offset = Number.parseInt(res.getHeader("Upload-Offset"), 10);
        if (Number.isNaN(offset)) {
          this._emitHttpError(req, res, "tus: invalid or missing offset value");
          return;
        }
        this._emitProgress(offset, this._size);
        this._emitChunkComplete(offset - this._offset, offset, this._size);
        this._offset = offset;
        if (offset === this._size) {
          this._emitSuccess(res);
          this._source.close();
          return;
        }
        this._performUpload();
      }
      /**
       * Create a new HTTP request object with the given method and URL.
       *
       * @api private
       */
    }, {
      key: "_openRequest",
      value: function _openRequest(method, url) {
        var req = openRequest(method, url, this.options);
        this._req = req;
        return req;
      }
      /**
       * Remove the entry in the URL storage, if it has been saved before.
       *
       * @api private
       */
    }, {
      key: "_removeFromUrlStorage",
      value: function _removeFromUrlStorage() {
        var _this10 = this;
        if (!this._urlStorageKey) return;
        this._urlStorage.removeUpload(this._urlStorageKey)["catch"](function(err) {
          _this10._emitError(err);
        });
        this._urlStorageKey = null;
      }
      /**
       * Add the upload URL to the URL storage, if possible.
       *
       * @api private
       */
    }, {
      key: "_saveUploadInUrlStorage",
      value: function _saveUploadInUrlStorage() {
        var _this11 = this;
        if (!this.options.storeFingerprintForResuming || !this._fingerprint || this._urlStorageKey !== null) {
          return Promise.resolve();
        }
        var storedUpload = {
          size: this._size,
          metadata: this.options.metadata,
          creationTime: (/* @__PURE__ */ new Date()).toString()
        };
        if (this._parallelUploads) {
          storedUpload.parallelUploadUrls = this._parallelUploadUrls;
        } else {
          storedUpload.uploadUrl = this.url;
        }
        return this._urlStorage.addUpload(this._fingerprint, storedUpload).then(function(urlStorageKey) {
          _this11._urlStorageKey = urlStorageKey;
        });
      }
      /**
       * Send a request with the provided body.
       *
       * @api private
       */
    }, {
      key: "_sendRequest",
      value: function _sendRequest(req) {
        var body = arguments.length > 1 && arguments[1] !== void 0 ? arguments[1] : null;
        return sendRequest(req, body, this.options);
      }
    }], [{
      key: "terminate",
      value: function terminate(url) {
        var options = arguments.length > 1 && arguments[1] !== void 0 ? arguments[1] : {};
        var req = openRequest("DELETE", url, options);
        return sendRequest(req, null, options).then(function(res) {
          if (res.getStatus() === 204) {
            return;
          }
          throw new error_default("tus: unexpected response while terminating upload", null, req, res);
        })["catch"](function(err) {
          if (!(err instanceof error_default)) {
            err = new error_default("tus: failed to terminate upload", err, req, null);
          }
          if (!shouldRetry(err, 0, options)) {
            throw err;
          }
          var delay = options.retryDelays[0];
          var remainingDelays = options.retryDelays.slice(1);
          var newOptions = _objectSpread(_objectSpread({}, options), {}, {
            retryDelays: remainingDelays
          });
          return new Promise(function(resolve) {
            return setTimeout(resolve, delay);
          }).then(function() {
            return BaseUpload2.terminate(url, newOptions);
          });
        });
      }
    }]);
  })();
  function encodeMetadata(metadata) {
    return Object.entries(metadata).map(function(_ref3) {
      var _ref4 = _slicedToArray(_ref3, 2), key2 = _ref4[0], value = _ref4[1];
      return "".concat(key2, " ").concat(gBase64.encode(String(value)));
    }).join(",");
  }
  function inStatusCategory(status, category) {
    return status >= category && status < category + 100;
  }
  function openRequest(method, url, options) {
    var req = options.httpStack.createRequest(method, url);
    if (options.protocol === PROTOCOL_IETF_DRAFT_03) {
      req.setHeader("Upload-Draft-Interop-Version", "5");
    } else if (options.protocol === PROTOCOL_IETF_DRAFT_05) {
      req.setHeader("Upload-Draft-Interop-Version", "6");
    } else {
      req.setHeader("Tus-Resumable", "1.0.0");
    }
    var headers = options.headers || {};
    for (var _i2 = 0, _Object$entries = Object.entries(headers); _i2 < _Object$entries.length; _i2++) {
      var _Object$entries$_i = _slicedToArray(_Object$entries[_i2], 2), name = _Object$entries$_i[0], value = _Object$entries$_i[1];
      req.setHeader(name, value);
    }
    if (options.addRequestId) {
      var requestId = uuid();
      req.setHeader("X-Request-ID", requestId);
    }
    return req;
  }
  function sendRequest(_x, _x2, _x3) {
    return _sendRequest2.apply(this, arguments);
  }
  function _sendRequest2() {
    _sendRequest2 = _asyncToGenerator(/* @__PURE__ */ _regeneratorRuntime().mark(function _callee(req, body, options) {
      var res;
      return _regeneratorRuntime().wrap(function _callee$(_context) {
        while (1) switch (_context.prev = _context.next) {
          case 0:
            if (!(typeof options.onBeforeRequest === "function")) {
              _context.next = 3;
              break;
            }
            _context.next = 3;
            return options.onBeforeRequest(req);
          case 3:
            _context.next = 5;
            return req.send(body);
          case 5:
            res = _context.sent;
            if (!(typeof options.onAfterResponse === "function")) {
              _context.next = 9;
              break;
            }
            _context.next = 9;
            return options.onAfterResponse(req, res);
          case 9:
            return _context.abrupt("return", res);
          case 10:
          case "end":
            return _context.stop();
        }
      }, _callee);
    }));
    return _sendRequest2.apply(this, arguments);
  }
  function isOnline() {
    var online = true;
    if (typeof navigator !== "undefined" && navigator.onLine === false) {
      online = false;
    }
    return online;
  }
  function shouldRetry(err, retryAttempt, options) {
    if (options.retryDelays == null || retryAttempt >= options.retryDelays.length || err.originalRequest == null) {
      return false;
    }
    if (options && typeof options.onShouldRetry === "function") {
      return options.onShouldRetry(err, retryAttempt, options);
    }
    return defaultOnShouldRetry(err);
  }
  function defaultOnShouldRetry(err) {
    var status = err.originalResponse ? err.originalResponse.getStatus() : 0;
    return (!inStatusCategory(status, 400) || status === 409 || status === 423) && isOnline();
  }
  function resolveUrl(origin, link) {
    return new import_url_parse.default(link, origin).toString();
  }
  function splitSizeIntoParts(totalSize, partCount) {
    var partSize = Math.floor(totalSize / partCount);
    var parts = [];
    for (var i = 0; i < partCount; i++) {
      parts.push({
        start: partSize * i,
        end: partSize * (i + 1)
      });
    }
    parts[partCount - 1].end = totalSize;
    return parts;
  }
  BaseUpload.defaultOptions = defaultOptions;
  var upload_default = BaseUpload;

  // node_modules/tus-js-client/lib.esm/browser/isReactNative.js
  var isReactNative = function isReactNative2() {
    return typeof navigator !== "undefined" && typeof navigator.product === "string" && navigator.product.toLowerCase() === "reactnative";
  };
  var isReactNative_default = isReactNative;

  // node_modules/tus-js-client/lib.esm/browser/uriToBlob.js
  function uriToBlob(uri) {
    return new Promise(function(resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.responseType = "blob";
      xhr.onload = function() {
        var blob = xhr.response;
        resolve(blob);
      };
      xhr.onerror = function(err) {
        reject(err);
      };
      xhr.open("GET", uri);
      xhr.send();
    });
  }

  // node_modules/tus-js-client/lib.esm/browser/sources/isCordova.js
  var isCordova = function isCordova2() {
    return typeof window !== "undefined" && (typeof window.PhoneGap !== "undefined" || typeof window.Cordova !== "undefined" || typeof window.cordova !== "undefined");
  };
  var isCordova_default = isCordova;

  // node_modules/tus-js-client/lib.esm/browser/sources/readAsByteArray.js
  function readAsByteArray(chunk) {
    return new Promise(function(resolve, reject) {
      var reader = new FileReader();
      reader.onload = function() {
        var value = new Uint8Array(reader.result);
        resolve({
          value
        });
      };
      reader.onerror = function(err) {
        reject(err);
      };
      reader.readAsArrayBuffer(chunk);
    });
  }

  // node_modules/tus-js-client/lib.esm/browser/sources/FileSource.js
  function _typeof4(o) {
    "@babel/helpers - typeof";
    return _typeof4 = "function" == typeof Symbol && "symbol" == typeof Symbol.iterator ? function(o2) {
      return typeof o2;
    } : function(o2) {
      return o2 && "function" == typeof Symbol && o2.constructor === Symbol && o2 !== Symbol.prototype ? "symbol" : typeof o2;
    }, _typeof4(o);
  }
  function _classCallCheck4(instance, Constructor) {
    if (!(instance instanceof Constructor)) {
      throw new TypeError("Cannot call a class as a function");
    }
  }
  function _defineProperties4(target, props) {
    for (var i = 0; i < props.length; i++) {
      var descriptor = props[i];
      descriptor.enumerable = descriptor.enumerable || false;
      descriptor.configurable = true;
      if ("value" in descriptor) descriptor.writable = true;
      Object.defineProperty(target, _toPropertyKey4(descriptor.key), descriptor);
    }
  }
  function _createClass4(Constructor, protoProps, staticProps) {
    if (protoProps) _defineProperties4(Constructor.prototype, protoProps);
    if (staticProps) _defineProperties4(Constructor, staticProps);
    Object.defineProperty(Constructor, "prototype", { writable: false });
    return Constructor;
  }
  function _toPropertyKey4(t) {
    var i = _toPrimitive4(t, "string");
    return "symbol" == _typeof4(i) ? i : i + "";
  }
  function _toPrimitive4(t, r) {
    if ("object" != _typeof4(t) || !t) return t;
    var e = t[Symbol.toPrimitive];
    if (void 0 !== e) {
      var i = e.call(t, r || "default");
      if ("object" != _typeof4(i)) return i;
      throw new TypeError("@@toPrimitive must return a primitive value.");
    }
    return ("string" === r ? String : Number)(t);
  }
  var FileSource = /* @__PURE__ */ (function() {
    function FileSource2(file) {
      _classCallCheck4(this, FileSource2);
      this._file = file;
      this.size = file.size;
    }
    return _createClass4(FileSource2, [{
      key: "slice",
      value: function slice(start, end) {
        if (isCordova_default()) {
          return readAsByteArray(this._file.slice(start, end));
        }
        var value = this._file.slice(start, end);
        var done = end >= this.size;
        return Promise.resolve({
          value,
          done
        });
      }
    }, {
      key: "close",
      value: function close() {
      }
    }]);
  })();

  // node_modules/tus-js-client/lib.esm/browser/sources/StreamSource.js
  function _typeof5(o) {
    "@babel/helpers - typeof";
    return _typeof5 = "function" == typeof Symbol && "symbol" == typeof Symbol.iterator ? function(o2) {
      return typeof o2;
    } : function(o2) {
      return o2 && "function" == typeof Symbol && o2.constructor === Symbol && o2 !== Symbol.prototype ? "symbol" : typeof o2;
    }, _typeof5(o);
  }
  function _classCallCheck5(instance, Constructor) {
    if (!(instance instanceof Constructor)) {
      throw new TypeError("Cannot call a class as a function");
    }
  }
  function _defineProperties5(target, props) {
    for (var i = 0; i < props.length; i++) {
      var descriptor = props[i];
      descriptor.enumerable = descriptor.enumerable || false;
      descriptor.configurable = true;
      if ("value" in descriptor) descriptor.writable = true;
      Object.defineProperty(target, _toPropertyKey5(descriptor.key), descriptor);
    }
  }
  function _createClass5(Constructor, protoProps, staticProps) {
    if (protoProps) _defineProperties5(Constructor.prototype, protoProps);
    if (staticProps) _defineProperties5(Constructor, staticProps);
    Object.defineProperty(Constructor, "prototype", { writable: false });
    return Constructor;
  }
  function _toPropertyKey5(t) {
    var i = _toPrimitive5(t, "string");
    return "symbol" == _typeof5(i) ? i : i + "";
  }
  function _toPrimitive5(t, r) {
    if ("object" != _typeof5(t) || !t) return t;
    var e = t[Symbol.toPrimitive];
    if (void 0 !== e) {
      var i = e.call(t, r || "default");
      if ("object" != _typeof5(i)) return i;
      throw new TypeError("@@toPrimitive must return a primitive value.");
    }
    return ("string" === r ? String : Number)(t);
  }
  function len(blobOrArray) {
    if (blobOrArray === void 0) return 0;
    if (blobOrArray.size !== void 0) return blobOrArray.size;
    return blobOrArray.length;
  }
  function concat(a, b) {
    if (a.concat) {
      return a.concat(b);
    }
    if (a instanceof Blob) {
      return new Blob([a, b], {
        type: a.type
      });
    }
    if (a.set) {
      var c = new a.constructor(a.length + b.length);
      c.set(a);
      c.set(b, a.length);
      return c;
    }
    throw new Error("Unknown data type");
  }
  var StreamSource = /* @__PURE__ */ (function() {
    function StreamSource2(reader) {
      _classCallCheck5(this, StreamSource2);
      this._buffer = void 0;
      this._bufferOffset = 0;
      this._reader = reader;
      this._done = false;
    }
    return _createClass5(StreamSource2, [{
      key: "slice",
      value: function slice(start, end) {
        if (start < this._bufferOffset) {
          return Promise.reject(new Error("Requested data is before the reader's current offset"));
        }
        return this._readUntilEnoughDataOrDone(start, end);
      }
    }, {
      key: "_readUntilEnoughDataOrDone",
      value: function _readUntilEnoughDataOrDone(start, end) {
        var _this = this;
        var hasEnoughData = end <= this._bufferOffset + len(this._buffer);
        if (this._done || hasEnoughData) {
          var value = this._getDataFromBuffer(start, end);
          var done = value == null ? this._done : false;
          return Promise.resolve({
            value,
            done
          });
        }
        return this._reader.read().then(function(_ref) {
          var value2 = _ref.value, done2 = _ref.done;
          if (done2) {
            _this._done = true;
          } else if (_this._buffer === void 0) {
            _this._buffer = value2;
          } else {
            _this._buffer = concat(_this._buffer, value2);
          }
          return _this._readUntilEnoughDataOrDone(start, end);
        });
      }
    }, {
      key: "_getDataFromBuffer",
      value: function _getDataFromBuffer(start, end) {
        if (start > this._bufferOffset) {
          this._buffer = this._buffer.slice(start - this._bufferOffset);
          this._bufferOffset = start;
        }
        var hasAllDataBeenRead = len(this._buffer) === 0;
        if (this._done && hasAllDataBeenRead) {
          return null;
        }
        return this._buffer.slice(0, end - start);
      }
    }, {
      key: "close",
      value: function close() {
        if (this._reader.cancel) {
          this._reader.cancel();
        }
      }
    }]);
  })();

  // node_modules/tus-js-client/lib.esm/browser/fileReader.js
  function _typeof6(o) {
    "@babel/helpers - typeof";
    return _typeof6 = "function" == typeof Symbol && "symbol" == typeof Symbol.iterator ? function(o2) {
      return typeof o2;
    } : function(o2) {
      return o2 && "function" == typeof Symbol && o2.constructor === Symbol && o2 !== Symbol.prototype ? "symbol" : typeof o2;
    }, _typeof6(o);
  }
  function _regeneratorRuntime2() {
    "use strict";
    _regeneratorRuntime2 = function _regeneratorRuntime3() {
      return e;
    };
    var t, e = {}, r = Object.prototype, n = r.hasOwnProperty, o = Object.defineProperty || function(t2, e2, r2) {
      t2[e2] = r2.value;
    }, i = "function" == typeof Symbol ? Symbol : {}, a = i.iterator || "@@iterator", c = i.asyncIterator || "@@asyncIterator", u = i.toStringTag || "@@toStringTag";
    function define(t2, e2, r2) {
      return Object.defineProperty(t2, e2, { value: r2, enumerable: true, configurable: true, writable: true }), t2[e2];
    }
    try {
      define({}, "");
    } catch (t2) {
      define = function define2(t3, e2, r2) {
        return t3[e2] = r2;
      };
    }
    function wrap(t2, e2, r2, n2) {
      var i2 = e2 && e2.prototype instanceof Generator ? e2 : Generator, a2 = Object.create(i2.prototype), c2 = new Context(n2 || []);
      return o(a2, "_invoke", { value: makeInvokeMethod(t2, r2, c2) }), a2;
    }
    function tryCatch(t2, e2, r2) {
      try {
        return { type: "normal", arg: t2.call(e2, r2) };
      } catch (t3) {
        return { type: "throw", arg: t3 };
      }
    }
    e.wrap = wrap;
    var h = "suspendedStart", l = "suspendedYield", f = "executing", s = "completed", y = {};
    function Generator() {
    }
    function GeneratorFunction() {
    }
    function GeneratorFunctionPrototype() {
    }
    var p = {};
    define(p, a, function() {
      return this;
    });
    var d = Object.getPrototypeOf, v = d && d(d(values([])));
    v && v !== r && n.call(v, a) && (p = v);
    var g = GeneratorFunctionPrototype.prototype = Generator.prototype = Object.create(p);
    function defineIteratorMethods(t2) {
      ["next", "throw", "return"].forEach(function(e2) {
        define(t2, e2, function(t3) {
          return this._invoke(e2, t3);
        });
      });
    }
    function AsyncIterator(t2, e2) {
      function invoke(r3, o2, i2, a2) {
        var c2 = tryCatch(t2[r3], t2, o2);
        if ("throw" !== c2.type) {
          var u2 = c2.arg, h2 = u2.value;
          return h2 && "object" == _typeof6(h2) && n.call(h2, "__await") ? e2.resolve(h2.__await).then(function(t3) {
            invoke("next", t3, i2, a2);
          }, function(t3) {
            invoke("throw", t3, i2, a2);
          }) : e2.resolve(h2).then(function(t3) {
            u2.value = t3, i2(u2);
          }, function(t3) {
            return invoke("throw", t3, i2, a2);
          });
        }
        a2(c2.arg);
      }
      var r2;
      o(this, "_invoke", { value: function value(t3, n2) {
        function callInvokeWithMethodAndArg() {
          return new e2(function(e3, r3) {
            invoke(t3, n2, e3, r3);
          });
        }
        return r2 = r2 ? r2.then(callInvokeWithMethodAndArg, callInvokeWithMethodAndArg) : callInvokeWithMethodAndArg();
      } });
    }
    function makeInvokeMethod(e2, r2, n2) {
      var o2 = h;
      return function(i2, a2) {
        if (o2 === f) throw Error("Generator is already running");
        if (o2 === s) {
          if ("throw" === i2) throw a2;
          return { value: t, done: true };
        }
        for (n2.method = i2, n2.arg = a2; ; ) {
          var c2 = n2.delegate;
          if (c2) {
            var u2 = maybeInvokeDelegate(c2, n2);
            if (u2) {
              if (u2 === y) continue;
              return u2;
            }
          }
          if ("next" === n2.method) n2.sent = n2._sent = n2.arg;
          else if ("throw" === n2.method) {
            if (o2 === h) throw o2 = s, n2.arg;
            n2.dispatchException(n2.arg);
          } else "return" === n2.method && n2.abrupt("return", n2.arg);
          o2 = f;
          var p2 = tryCatch(e2, r2, n2);
          if ("normal" === p2.type) {
            if (o2 = n2.done ? s : l, p2.arg === y) continue;
            return { value: p2.arg, done: n2.done };
          }
          "throw" === p2.type && (o2 = s, n2.method = "throw", n2.arg = p2.arg);
        }
      };
    }
    function maybeInvokeDelegate(e2, r2) {
      var n2 = r2.method, o2 = e2.iterator[n2];
      if (o2 === t) return r2.delegate = null, "throw" === n2 && e2.iterator["return"] && (r2.method = "return", r2.arg = t, maybeInvokeDelegate(e2, r2), "throw" === r2.method) || "return" !== n2 && (r2.method = "throw", r2.arg = new TypeError("The iterator does not provide a '" + n2 + "' method")), y;
      var i2 = tryCatch(o2, e2.iterator, r2.arg);
      if ("throw" === i2.type) return r2.method = "throw", r2.arg = i2.arg, r2.delegate = null, y;
      var a2 = i2.arg;
      return a2 ? a2.done ? (r2[e2.resultName] = a2.value, r2.next = e2.nextLoc, "return" !== r2.method && (r2.method = "next", r2.arg = t), r2.delegate = null, y) : a2 : (r2.method = "throw", r2.arg = new TypeError("iterator result is not an object"), r2.delegate = null, y);
    }
    function pushTryEntry(t2) {
      var e2 = { tryLoc: t2[0] };
      1 in t2 && (e2.catchLoc = t2[1]), 2 in t2 && (e2.finallyLoc = t2[2], e2.afterLoc = t2[3]), this.tryEntries.push(e2);
    }
    function resetTryEntry(t2) {
      var e2 = t2.completion || {};
      e2.type = "normal", delete e2.arg, t2.completion = e2;
    }
    function Context(t2) {
      this.tryEntries = [{ tryLoc: "root" }], t2.forEach(pushTryEntry, this), this.reset(true);
    }
    function values(e2) {
      if (e2 || "" === e2) {
        var r2 = e2[a];
        if (r2) return r2.call(e2);
        if ("function" == typeof e2.next) return e2;
        if (!isNaN(e2.length)) {
          var o2 = -1, i2 = function next() {
            for (; ++o2 < e2.length; ) if (n.call(e2, o2)) return next.value = e2[o2], next.done = false, next;
            return next.value = t, next.done = true, next;
          };
          return i2.next = i2;
        }
      }
      throw new TypeError(_typeof6(e2) + " is not iterable");
    }
    return GeneratorFunction.prototype = GeneratorFunctionPrototype, o(g, "constructor", { value: GeneratorFunctionPrototype, configurable: true }), o(GeneratorFunctionPrototype, "constructor", { value: GeneratorFunction, configurable: true }), GeneratorFunction.displayName = define(GeneratorFunctionPrototype, u, "GeneratorFunction"), e.isGeneratorFunction = function(t2) {
      var e2 = "function" == typeof t2 && t2.constructor;
      return !!e2 && (e2 === GeneratorFunction || "GeneratorFunction" === (e2.displayName || e2.name));
    }, e.mark = function(t2) {
      return Object.setPrototypeOf ? Object.setPrototypeOf(t2, GeneratorFunctionPrototype) : (t2.__proto__ = GeneratorFunctionPrototype, define(t2, u, "GeneratorFunction")), t2.prototype = Object.create(g), t2;
    }, e.awrap = function(t2) {
      return { __await: t2 };
    }, defineIteratorMethods(AsyncIterator.prototype), define(AsyncIterator.prototype, c, function() {
      return this;
    }), e.AsyncIterator = AsyncIterator, e.async = function(t2, r2, n2, o2, i2) {
      void 0 === i2 && (i2 = Promise);
      var a2 = new AsyncIterator(wrap(t2, r2, n2, o2), i2);
      return e.isGeneratorFunction(r2) ? a2 : a2.next().then(function(t3) {
        return t3.done ? t3.value : a2.next();
      });
    }, defineIteratorMethods(g), define(g, u, "Generator"), define(g, a, function() {
      return this;
    }), define(g, "toString", function() {
      return "[object Generator]";
    }), e.keys = function(t2) {
      var e2 = Object(t2), r2 = [];
      for (var n2 in e2) r2.push(n2);
      return r2.reverse(), function next() {
        for (; r2.length; ) {
          var t3 = r2.pop();
          if (t3 in e2) return next.value = t3, next.done = false, next;
        }
        return next.done = true, next;
      };
    }, e.values = values, Context.prototype = { constructor: Context, reset: function reset(e2) {
      if (this.prev = 0, this.next = 0, this.sent = this._sent = t, this.done = false, this.delegate = null, this.method = "next", this.arg = t, this.tryEntries.forEach(resetTryEntry), !e2) for (var r2 in this) "t" === r2.charAt(0) && n.call(this, r2) && !isNaN(+r2.slice(1)) && (this[r2] = t);
    }, stop: function stop() {
      this.done = true;
      var t2 = this.tryEntries[0].completion;
      if ("throw" === t2.type) throw t2.arg;
      return this.rval;
    }, dispatchException: function dispatchException(e2) {
      if (this.done) throw e2;
      var r2 = this;
      function handle(n2, o3) {
        return a2.type = "throw", a2.arg = e2, r2.next = n2, o3 && (r2.method = "next", r2.arg = t), !!o3;
      }
      for (var o2 = this.tryEntries.length - 1; o2 >= 0; --o2) {
        var i2 = this.tryEntries[o2], a2 = i2.completion;
        if ("root" === i2.tryLoc) return handle("end");
        if (i2.tryLoc <= this.prev) {
          var c2 = n.call(i2, "catchLoc"), u2 = n.call(i2, "finallyLoc");
          if (c2 && u2) {
            if (this.prev < i2.catchLoc) return handle(i2.catchLoc, true);
            if (this.prev < i2.finallyLoc) return handle(i2.finallyLoc);
          } else if (c2) {
            if (this.prev < i2.catchLoc) return handle(i2.catchLoc, true);
          } else {
            if (!u2) throw Error("try statement without catch or finally");
            if (this.prev < i2.finallyLoc) return handle(i2.finallyLoc);
          }
        }
      }
    }, abrupt: function abrupt(t2, e2) {
      for (var r2 = this.tryEntries.length - 1; r2 >= 0; --r2) {
        var o2 = this.tryEntries[r2];
        if (o2.tryLoc <= this.prev && n.call(o2, "finallyLoc") && this.prev < o2.finallyLoc) {
          var i2 = o2;
          break;
        }
      }
      i2 && ("break" === t2 || "continue" === t2) && i2.tryLoc <= e2 && e2 <= i2.finallyLoc && (i2 = null);
      var a2 = i2 ? i2.completion : {};
      return a2.type = t2, a2.arg = e2, i2 ? (this.method = "next", this.next = i2.finallyLoc, y) : this.complete(a2);
    }, complete: function complete(t2, e2) {
      if ("throw" === t2.type) throw t2.arg;
      return "break" === t2.type || "continue" === t2.type ? this.next = t2.arg : "return" === t2.type ? (this.rval = this.arg = t2.arg, this.method = "return", this.next = "end") : "normal" === t2.type && e2 && (this.next = e2), y;
    }, finish: function finish(t2) {
      for (var e2 = this.tryEntries.length - 1; e2 >= 0; --e2) {
        var r2 = this.tryEntries[e2];
        if (r2.finallyLoc === t2) return this.complete(r2.completion, r2.afterLoc), resetTryEntry(r2), y;
      }
    }, "catch": function _catch(t2) {
      for (var e2 = this.tryEntries.length - 1; e2 >= 0; --e2) {
        var r2 = this.tryEntries[e2];
        if (r2.tryLoc === t2) {
          var n2 = r2.completion;
          if ("throw" === n2.type) {
            var o2 = n2.arg;
            resetTryEntry(r2);
          }
          return o2;
        }
      }
      throw Error("illegal catch attempt");
    }, delegateYield: function delegateYield(e2, r2, n2) {
      return this.delegate = { iterator: values(e2), resultName: r2, nextLoc: n2 }, "next" === this.method && (this.arg = t), y;
    } }, e;
  }
  function asyncGeneratorStep2(gen, resolve, reject, _next, _throw, key2, arg) {
    try {
      var info = gen[key2](arg);
      var value = info.value;
    } catch (error) {
      reject(error);
      return;
    }
    if (info.done) {
      resolve(value);
    } else {
      Promise.resolve(value).then(_next, _throw);
    }
  }
  function _asyncToGenerator2(fn) {
    return function() {
      var self2 = this, args = arguments;
      return new Promise(function(resolve, reject) {
        var gen = fn.apply(self2, args);
        function _next(value) {
          asyncGeneratorStep2(gen, resolve, reject, _next, _throw, "next", value);
        }
        function _throw(err) {
          asyncGeneratorStep2(gen, resolve, reject, _next, _throw, "throw", err);
        }
        _next(void 0);
      });
    };
  }
  function _classCallCheck6(instance, Constructor) {
    if (!(instance instanceof Constructor)) {
      throw new TypeError("Cannot call a class as a function");
    }
  }
  function _defineProperties6(target, props) {
    for (var i = 0; i < props.length; i++) {
      var descriptor = props[i];
      descriptor.enumerable = descriptor.enumerable || false;
      descriptor.configurable = true;
      if ("value" in descriptor) descriptor.writable = true;
      Object.defineProperty(target, _toPropertyKey6(descriptor.key), descriptor);
    }
  }
  function _createClass6(Constructor, protoProps, staticProps) {
    if (protoProps) _defineProperties6(Constructor.prototype, protoProps);
    if (staticProps) _defineProperties6(Constructor, staticProps);
    Object.defineProperty(Constructor, "prototype", { writable: false });
    return Constructor;
  }
  function _toPropertyKey6(t) {
    var i = _toPrimitive6(t, "string");
    return "symbol" == _typeof6(i) ? i : i + "";
  }
  function _toPrimitive6(t, r) {
    if ("object" != _typeof6(t) || !t) return t;
    var e = t[Symbol.toPrimitive];
    if (void 0 !== e) {
      var i = e.call(t, r || "default");
      if ("object" != _typeof6(i)) return i;
      throw new TypeError("@@toPrimitive must return a primitive value.");
    }
    return ("string" === r ? String : Number)(t);
  }
  var FileReader2 = /* @__PURE__ */ (function() {
    function FileReader3() {
      _classCallCheck6(this, FileReader3);
    }
    return _createClass6(FileReader3, [{
      key: "openFile",
      value: (function() {
        var _openFile = _asyncToGenerator2(/* @__PURE__ */ _regeneratorRuntime2().mark(function _callee(input, chunkSize) {
          var blob;
          return _regeneratorRuntime2().wrap(function _callee$(_context) {
            while (1) switch (_context.prev = _context.next) {
              case 0:
                if (!(isReactNative_default() && input && typeof input.uri !== "undefined")) {
                  _context.next = 11;
                  break;
                }
                _context.prev = 1;
                _context.next = 4;
                return uriToBlob(input.uri);
              case 4:
                blob = _context.sent;
                return _context.abrupt("return", new FileSource(blob));
              case 8:
                _context.prev = 8;
                _context.t0 = _context["catch"](1);
                throw new Error("tus: cannot fetch `file.uri` as Blob, make sure the uri is correct and accessible. ".concat(_context.t0));
              case 11:
                if (!(typeof input.slice === "function" && typeof input.size !== "undefined")) {
                  _context.next = 13;
                  break;
                }
                return _context.abrupt("return", Promise.resolve(new FileSource(input)));
              case 13:
                if (!(typeof input.read === "function")) {
                  _context.next = 18;
                  break;
                }
                chunkSize = Number(chunkSize);
                if (Number.isFinite(chunkSize)) {
                  _context.next = 17;
                  break;
                }
                return _context.abrupt("return", Promise.reject(new Error("cannot create source for stream without a finite value for the `chunkSize` option")));
              case 17:
                return _context.abrupt("return", Promise.resolve(new StreamSource(input, chunkSize)));
              case 18:
                return _context.abrupt("return", Promise.reject(new Error("source object may only be an instance of File, Blob, or Reader in this environment")));
              case 19:
              case "end":
                return _context.stop();
            }
          }, _callee, null, [[1, 8]]);
        }));
        function openFile(_x, _x2) {
          return _openFile.apply(this, arguments);
        }
        return openFile;
      })()
    }]);
  })();

  // node_modules/tus-js-client/lib.esm/browser/fileSignature.js
  function fingerprint(file, options) {
    if (isReactNative_default()) {
      return Promise.resolve(reactNativeFingerprint(file, options));
    }
    return Promise.resolve(["tus-br", file.name, file.type, file.size, file.lastModified, options.endpoint].join("-"));
  }
  function reactNativeFingerprint(file, options) {
    var exifHash = file.exif ? hashCode(JSON.stringify(file.exif)) : "noexif";
    return ["tus-rn", file.name || "noname", file.size || "nosize", exifHash, options.endpoint].join("/");
  }
  function hashCode(str) {
    var hash = 0;
    if (str.length === 0) {
      return hash;
    }
    for (var i = 0; i < str.length; i++) {
      var _char = str.charCodeAt(i);
      hash = (hash << 5) - hash + _char;
      hash &= hash;
    }
    return hash;
  }

  // node_modules/tus-js-client/lib.esm/browser/httpStack.js
  function _typeof7(o) {
    "@babel/helpers - typeof";
    return _typeof7 = "function" == typeof Symbol && "symbol" == typeof Symbol.iterator ? function(o2) {
      return typeof o2;
    } : function(o2) {
      return o2 && "function" == typeof Symbol && o2.constructor === Symbol && o2 !== Symbol.prototype ? "symbol" : typeof o2;
    }, _typeof7(o);
  }
  function _classCallCheck7(instance, Constructor) {
    if (!(instance instanceof Constructor)) {
      throw new TypeError("Cannot call a class as a function");
    }
  }
  function _defineProperties7(target, props) {
    for (var i = 0; i < props.length; i++) {
      var descriptor = props[i];
      descriptor.enumerable = descriptor.enumerable || false;
      descriptor.configurable = true;
      if ("value" in descriptor) descriptor.writable = true;
      Object.defineProperty(target, _toPropertyKey7(descriptor.key), descriptor);
    }
  }
  function _createClass7(Constructor, protoProps, staticProps) {
    if (protoProps) _defineProperties7(Constructor.prototype, protoProps);
    if (staticProps) _defineProperties7(Constructor, staticProps);
    Object.defineProperty(Constructor, "prototype", { writable: false });
    return Constructor;
  }
  function _toPropertyKey7(t) {
    var i = _toPrimitive7(t, "string");
    return "symbol" == _typeof7(i) ? i : i + "";
  }
  function _toPrimitive7(t, r) {
    if ("object" != _typeof7(t) || !t) return t;
    var e = t[Symbol.toPrimitive];
    if (void 0 !== e) {
      var i = e.call(t, r || "default");
      if ("object" != _typeof7(i)) return i;
      throw new TypeError("@@toPrimitive must return a primitive value.");
    }
    return ("string" === r ? String : Number)(t);
  }
  var XHRHttpStack = /* @__PURE__ */ (function() {
    function XHRHttpStack2() {
      _classCallCheck7(this, XHRHttpStack2);
    }
    return _createClass7(XHRHttpStack2, [{
      key: "createRequest",
      value: function createRequest(method, url) {
        return new Request(method, url);
      }
    }, {
      key: "getName",
      value: function getName() {
        return "XHRHttpStack";
      }
    }]);
  })();
  var Request = /* @__PURE__ */ (function() {
    function Request2(method, url) {
      _classCallCheck7(this, Request2);
      this._xhr = new XMLHttpRequest();
      this._xhr.open(method, url, true);
      this._method = method;
      this._url = url;
      this._headers = {};
    }
    return _createClass7(Request2, [{
      key: "getMethod",
      value: function getMethod() {
        return this._method;
      }
    }, {
      key: "getURL",
      value: function getURL() {
        return this._url;
      }
    }, {
      key: "setHeader",
      value: function setHeader(header, value) {
        this._xhr.setRequestHeader(header, value);
        this._headers[header] = value;
      }
    }, {
      key: "getHeader",
      value: function getHeader(header) {
        return this._headers[header];
      }
    }, {
      key: "setProgressHandler",
      value: function setProgressHandler(progressHandler) {
        if (!("upload" in this._xhr)) {
          return;
        }
        this._xhr.upload.onprogress = function(e) {
          if (!e.lengthComputable) {
            return;
          }
          progressHandler(e.loaded);
        };
      }
    }, {
      key: "send",
      value: function send() {
        var _this = this;
        var body = arguments.length > 0 && arguments[0] !== void 0 ? arguments[0] : null;
        return new Promise(function(resolve, reject) {
          _this._xhr.onload = function() {
            resolve(new Response(_this._xhr));
          };
          _this._xhr.onerror = function(err) {
            reject(err);
          };
          _this._xhr.send(body);
        });
      }
    }, {
      key: "abort",
      value: function abort() {
        this._xhr.abort();
        return Promise.resolve();
      }
    }, {
      key: "getUnderlyingObject",
      value: function getUnderlyingObject() {
        return this._xhr;
      }
    }]);
  })();
  var Response = /* @__PURE__ */ (function() {
    function Response2(xhr) {
      _classCallCheck7(this, Response2);
      this._xhr = xhr;
    }
    return _createClass7(Response2, [{
      key: "getStatus",
      value: function getStatus() {
        return this._xhr.status;
      }
    }, {
      key: "getHeader",
      value: function getHeader(header) {
        return this._xhr.getResponseHeader(header);
      }
    }, {
      key: "getBody",
      value: function getBody() {
        return this._xhr.responseText;
      }
    }, {
      key: "getUnderlyingObject",
      value: function getUnderlyingObject() {
        return this._xhr;
      }
    }]);
  })();

  // node_modules/tus-js-client/lib.esm/browser/urlStorage.js
  function _typeof8(o) {
    "@babel/helpers - typeof";
    return _typeof8 = "function" == typeof Symbol && "symbol" == typeof Symbol.iterator ? function(o2) {
      return typeof o2;
    } : function(o2) {
      return o2 && "function" == typeof Symbol && o2.constructor === Symbol && o2 !== Symbol.prototype ? "symbol" : typeof o2;
    }, _typeof8(o);
  }
  function _classCallCheck8(instance, Constructor) {
    if (!(instance instanceof Constructor)) {
      throw new TypeError("Cannot call a class as a function");
    }
  }
  function _defineProperties8(target, props) {
    for (var i = 0; i < props.length; i++) {
      var descriptor = props[i];
      descriptor.enumerable = descriptor.enumerable || false;
      descriptor.configurable = true;
      if ("value" in descriptor) descriptor.writable = true;
      Object.defineProperty(target, _toPropertyKey8(descriptor.key), descriptor);
    }
  }
  function _createClass8(Constructor, protoProps, staticProps) {
    if (protoProps) _defineProperties8(Constructor.prototype, protoProps);
    if (staticProps) _defineProperties8(Constructor, staticProps);
    Object.defineProperty(Constructor, "prototype", { writable: false });
    return Constructor;
  }
  function _toPropertyKey8(t) {
    var i = _toPrimitive8(t, "string");
    return "symbol" == _typeof8(i) ? i : i + "";
  }
  function _toPrimitive8(t, r) {
    if ("object" != _typeof8(t) || !t) return t;
    var e = t[Symbol.toPrimitive];
    if (void 0 !== e) {
      var i = e.call(t, r || "default");
      if ("object" != _typeof8(i)) return i;
      throw new TypeError("@@toPrimitive must return a primitive value.");
    }
    return ("string" === r ? String : Number)(t);
  }
  var hasStorage = false;
  try {
    hasStorage = "localStorage" in window;
    key = "tusSupport";
    originalValue = localStorage.getItem(key);
    localStorage.setItem(key, originalValue);
    if (originalValue === null) localStorage.removeItem(key);
  } catch (e) {
    if (e.code === e.SECURITY_ERR || e.code === e.QUOTA_EXCEEDED_ERR) {
      hasStorage = false;
    } else {
      throw e;
    }
  }
  var key;
  var originalValue;
  var canStoreURLs = hasStorage;
  var WebStorageUrlStorage = /* @__PURE__ */ (function() {
    function WebStorageUrlStorage2() {
      _classCallCheck8(this, WebStorageUrlStorage2);
    }
    return _createClass8(WebStorageUrlStorage2, [{
      key: "findAllUploads",
      value: function findAllUploads() {
        var results = this._findEntries("tus::");
        return Promise.resolve(results);
      }
    }, {
      key: "findUploadsByFingerprint",
      value: function findUploadsByFingerprint(fingerprint2) {
        var results = this._findEntries("tus::".concat(fingerprint2, "::"));
        return Promise.resolve(results);
      }
    }, {
      key: "removeUpload",
      value: function removeUpload(urlStorageKey) {
        localStorage.removeItem(urlStorageKey);
        return Promise.resolve();
      }
    }, {
      key: "addUpload",
      value: function addUpload(fingerprint2, upload) {
        var id = Math.round(Math.random() * 1e12);
        var key2 = "tus::".concat(fingerprint2, "::").concat(id);
        localStorage.setItem(key2, JSON.stringify(upload));
        return Promise.resolve(key2);
      }
    }, {
      key: "_findEntries",
      value: function _findEntries(prefix) {
        var results = [];
        for (var i = 0; i < localStorage.length; i++) {
          var _key = localStorage.key(i);
          if (_key.indexOf(prefix) !== 0) continue;
          try {
            var upload = JSON.parse(localStorage.getItem(_key));
            upload.urlStorageKey = _key;
            results.push(upload);
          } catch (_e) {
          }
        }
        return results;
      }
    }]);
  })();

  // node_modules/tus-js-client/lib.esm/browser/index.js
  function _typeof9(o) {
    "@babel/helpers - typeof";
    return _typeof9 = "function" == typeof Symbol && "symbol" == typeof Symbol.iterator ? function(o2) {
      return typeof o2;
    } : function(o2) {
      return o2 && "function" == typeof Symbol && o2.constructor === Symbol && o2 !== Symbol.prototype ? "symbol" : typeof o2;
    }, _typeof9(o);
  }
  function _classCallCheck9(instance, Constructor) {
    if (!(instance instanceof Constructor)) {
      throw new TypeError("Cannot call a class as a function");
    }
  }
  function _defineProperties9(target, props) {
    for (var i = 0; i < props.length; i++) {
      var descriptor = props[i];
      descriptor.enumerable = descriptor.enumerable || false;
      descriptor.configurable = true;
      if ("value" in descriptor) descriptor.writable = true;
      Object.defineProperty(target, _toPropertyKey9(descriptor.key), descriptor);
    }
  }
  function _createClass9(Constructor, protoProps, staticProps) {
    if (protoProps) _defineProperties9(Constructor.prototype, protoProps);
    if (staticProps) _defineProperties9(Constructor, staticProps);
    Object.defineProperty(Constructor, "prototype", { writable: false });
    return Constructor;
  }
  function _callSuper2(t, o, e) {
    return o = _getPrototypeOf2(o), _possibleConstructorReturn2(t, _isNativeReflectConstruct2() ? Reflect.construct(o, e || [], _getPrototypeOf2(t).constructor) : o.apply(t, e));
  }
  function _possibleConstructorReturn2(self2, call) {
    if (call && (_typeof9(call) === "object" || typeof call === "function")) {
      return call;
    } else if (call !== void 0) {
      throw new TypeError("Derived constructors may only return object or undefined");
    }
    return _assertThisInitialized2(self2);
  }
  function _assertThisInitialized2(self2) {
    if (self2 === void 0) {
      throw new ReferenceError("this hasn't been initialised - super() hasn't been called");
    }
    return self2;
  }
  function _isNativeReflectConstruct2() {
    try {
      var t = !Boolean.prototype.valueOf.call(Reflect.construct(Boolean, [], function() {
      }));
    } catch (t2) {
    }
    return (_isNativeReflectConstruct2 = function _isNativeReflectConstruct3() {
      return !!t;
    })();
  }
  function _getPrototypeOf2(o) {
    _getPrototypeOf2 = Object.setPrototypeOf ? Object.getPrototypeOf.bind() : function _getPrototypeOf3(o2) {
      return o2.__proto__ || Object.getPrototypeOf(o2);
    };
    return _getPrototypeOf2(o);
  }
  function _inherits2(subClass, superClass) {
    if (typeof superClass !== "function" && superClass !== null) {
      throw new TypeError("Super expression must either be null or a function");
    }
    subClass.prototype = Object.create(superClass && superClass.prototype, { constructor: { value: subClass, writable: true, configurable: true } });
    Object.defineProperty(subClass, "prototype", { writable: false });
    if (superClass) _setPrototypeOf2(subClass, superClass);
  }
  function _setPrototypeOf2(o, p) {
    _setPrototypeOf2 = Object.setPrototypeOf ? Object.setPrototypeOf.bind() : function _setPrototypeOf3(o2, p2) {
      o2.__proto__ = p2;
      return o2;
    };
    return _setPrototypeOf2(o, p);
  }
  function ownKeys2(e, r) {
    var t = Object.keys(e);
    if (Object.getOwnPropertySymbols) {
      var o = Object.getOwnPropertySymbols(e);
      r && (o = o.filter(function(r2) {
        return Object.getOwnPropertyDescriptor(e, r2).enumerable;
      })), t.push.apply(t, o);
    }
    return t;
  }
  function _objectSpread2(e) {
    for (var r = 1; r < arguments.length; r++) {
      var t = null != arguments[r] ? arguments[r] : {};
      r % 2 ? ownKeys2(Object(t), true).forEach(function(r2) {
        _defineProperty2(e, r2, t[r2]);
      }) : Object.getOwnPropertyDescriptors ? Object.defineProperties(e, Object.getOwnPropertyDescriptors(t)) : ownKeys2(Object(t)).forEach(function(r2) {
        Object.defineProperty(e, r2, Object.getOwnPropertyDescriptor(t, r2));
      });
    }
    return e;
  }
  function _defineProperty2(obj, key2, value) {
    key2 = _toPropertyKey9(key2);
    if (key2 in obj) {
      Object.defineProperty(obj, key2, { value, enumerable: true, configurable: true, writable: true });
    } else {
      obj[key2] = value;
    }
    return obj;
  }
  function _toPropertyKey9(t) {
    var i = _toPrimitive9(t, "string");
    return "symbol" == _typeof9(i) ? i : i + "";
  }
  function _toPrimitive9(t, r) {
    if ("object" != _typeof9(t) || !t) return t;
    var e = t[Symbol.toPrimitive];
    if (void 0 !== e) {
      var i = e.call(t, r || "default");
      if ("object" != _typeof9(i)) return i;
      throw new TypeError("@@toPrimitive must return a primitive value.");
    }
    return ("string" === r ? String : Number)(t);
  }
  var defaultOptions2 = _objectSpread2(_objectSpread2({}, upload_default.defaultOptions), {}, {
    httpStack: new XHRHttpStack(),
    fileReader: new FileReader2(),
    urlStorage: canStoreURLs ? new WebStorageUrlStorage() : new NoopUrlStorage(),
    fingerprint
  });
  var Upload = /* @__PURE__ */ (function(_BaseUpload) {
    function Upload2() {
      var file = arguments.length > 0 && arguments[0] !== void 0 ? arguments[0] : null;
      var options = arguments.length > 1 && arguments[1] !== void 0 ? arguments[1] : {};
      _classCallCheck9(this, Upload2);
      options = _objectSpread2(_objectSpread2({}, defaultOptions2), options);
      return _callSuper2(this, Upload2, [file, options]);
    }
    _inherits2(Upload2, _BaseUpload);
    return _createClass9(Upload2, null, [{
      key: "terminate",
      value: function terminate(url) {
        var options = arguments.length > 1 && arguments[1] !== void 0 ? arguments[1] : {};
        options = _objectSpread2(_objectSpread2({}, defaultOptions2), options);
        return upload_default.terminate(url, options);
      }
    }]);
  })(upload_default);
  var isSupported = typeof XMLHttpRequest === "function" && typeof Blob === "function" && typeof Blob.prototype.slice === "function";

  // src/checksum.js
  var WEB_CRYPTO = {
    sha256: "SHA-256",
    "sha-256": "SHA-256",
    sha512: "SHA-512",
    "sha-512": "SHA-512",
    sha384: "SHA-384",
    "sha-384": "SHA-384",
    sha1: "SHA-1",
    "sha-1": "SHA-1"
  };
  var PREFERENCE = ["sha256", "sha-256", "sha512", "sha-512", "sha384", "sha-384", "sha1", "sha-1"];
  function hasWebCrypto() {
    return typeof globalThis.crypto?.subtle?.digest === "function";
  }
  function pickAlgorithm(header) {
    if (!header || !hasWebCrypto()) return null;
    const offered = header.split(",").map((name) => name.trim().toLowerCase()).filter(Boolean);
    return PREFERENCE.find((name) => offered.includes(name)) ?? null;
  }
  async function discoverChecksumAlgorithm(endpoint, fetchImpl = globalThis.fetch) {
    try {
      const res = await fetchImpl(endpoint, { method: "OPTIONS", headers: { "Tus-Resumable": "1.0.0" } });
      const extensions = (res.headers.get("Tus-Extension") ?? "").split(",").map((s) => s.trim());
      if (!extensions.includes("checksum")) return null;
      return pickAlgorithm(res.headers.get("Tus-Checksum-Algorithm"));
    } catch {
      return null;
    }
  }
  async function bytesOf(body) {
    if (body instanceof Uint8Array) return body;
    if (body instanceof ArrayBuffer) return new Uint8Array(body);
    if (typeof body?.arrayBuffer === "function") return new Uint8Array(await body.arrayBuffer());
    return null;
  }
  function toBase64(bytes) {
    let text = "";
    for (const byte of bytes) text += String.fromCharCode(byte);
    return btoa(text);
  }
  async function checksumHeader(algorithm, body) {
    const bytes = await bytesOf(body);
    if (bytes == null) return null;
    const digest = new Uint8Array(await globalThis.crypto.subtle.digest(WEB_CRYPTO[algorithm], bytes));
    return `${algorithm} ${toBase64(digest)}`;
  }
  var ChecksumRequest = class {
    constructor(inner, algorithm) {
      this.inner = inner;
      this.algorithm = algorithm;
    }
    getMethod() {
      return this.inner.getMethod();
    }
    getURL() {
      return this.inner.getURL();
    }
    setHeader(name, value) {
      this.inner.setHeader(name, value);
    }
    getHeader(name) {
      return this.inner.getHeader(name);
    }
    setProgressHandler(handler) {
      this.inner.setProgressHandler(handler);
    }
    async send(body = null) {
      if (body != null) {
        const header = await checksumHeader(this.algorithm, body);
        if (header) this.inner.setHeader("Upload-Checksum", header);
      }
      return this.inner.send(body);
    }
    abort() {
      return this.inner.abort();
    }
    getUnderlyingObject() {
      return this.inner.getUnderlyingObject();
    }
  };
  var ChecksumHttpStack = class {
    constructor(inner, algorithm) {
      this.inner = inner;
      this.algorithm = algorithm;
    }
    createRequest(method, url) {
      return new ChecksumRequest(this.inner.createRequest(method, url), this.algorithm);
    }
    getName() {
      return `${this.inner.getName()}+checksum(${this.algorithm})`;
    }
  };

  // src/errors.js
  function parseErrorBody(text) {
    if (!text) return null;
    try {
      const body = JSON.parse(text);
      const error = body?.error;
      if (error && typeof error.code === "string") {
        return { code: error.code, message: String(error.message ?? "") };
      }
      if (typeof body?.detail === "string") return { code: null, message: body.detail };
    } catch {
    }
    return null;
  }
  var STATUS_CODES = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    410: "gone",
    412: "precondition_failed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_content",
    460: "checksum_mismatch",
    507: "insufficient_storage"
  };
  function describeUploadError(err) {
    const res = err?.originalResponse ?? null;
    if (res) {
      const status = res.getStatus();
      const parsed = parseErrorBody(res.getBody());
      if (parsed?.code) return { status, code: parsed.code, message: parsed.message };
      return {
        status,
        code: STATUS_CODES[status] ?? (status >= 500 ? "server_error" : `http_${status}`),
        message: parsed?.message || `The server answered ${status}.`
      };
    }
    const text = String(err?.message ?? err ?? "unknown error");
    return { status: null, code: "network_error", message: text.split(", caused by")[0] };
  }
  var REFUSAL_CODES = /* @__PURE__ */ new Set([
    "bad_request",
    "invalid_parameter",
    "invalid_options",
    "missing_file",
    "malformed_multipart",
    "chunk_index_out_of_range",
    "total_chunks_mismatch",
    "chunk_size_mismatch",
    "empty_chunk",
    "invalid_filename",
    "unauthenticated",
    "forbidden",
    "final_upload_immutable",
    "too_large",
    "file_too_large",
    "chunk_too_large",
    "too_many_chunks",
    "unsupported_media_type",
    "extension_not_allowed",
    "extension_blocked",
    "unrecognized_format",
    "format_mismatch",
    "invalid_content_type",
    "invalid_content",
    "file_hash_mismatch",
    "dangerous_content",
    "trailing_data",
    "truncated_file",
    "no_video_stream",
    "undecodable_video",
    "duration_too_long",
    "dimensions_too_large",
    "malware_detected",
    "insufficient_role",
    "invalid_cursor",
    "invalid_range",
    // the library desk (issue 19)
    "invalid_url_signature",
    "url_expired"
  ]);
  var REFUSAL_STATUSES = /* @__PURE__ */ new Set([400, 401, 403, 413, 415, 422]);
  var OUTCOME_LABELS = { refused: "Refused", failed: "Failed" };
  function outcomeOf(error) {
    return REFUSAL_CODES.has(error?.code) || REFUSAL_STATUSES.has(error?.status) ? "refused" : "failed";
  }

  // src/tracker.js
  var PENDING_LIMIT = 500;
  var SEEN_LIMIT = 5e3;
  var FINAL_STATES = /* @__PURE__ */ new Set(["done", "error", "cancelled"]);
  var UPLOADED = (entry) => ({ state: "processing", bytesSent: entry.size, speed: null });
  var Tracker = class {
    constructor(onChange = () => {
    }) {
      this.onChange = onChange;
      this.entries = /* @__PURE__ */ new Map();
      this.nextId = 1;
      this.pending = [];
      this.seen = /* @__PURE__ */ new Set();
      this.sequences = /* @__PURE__ */ new Map();
      this.lastSequence = null;
    }
    add(file) {
      const entry = {
        id: `f${this.nextId++}`,
        name: file.name,
        size: file.size,
        type: file.type || "",
        state: "queued",
        bytesSent: 0,
        speed: null,
        sessionId: null,
        videoId: null,
        duplicate: false,
        stage: null,
        processingProgress: null,
        result: null,
        error: null,
        outcome: null,
        note: "Waiting to upload"
      };
      this.entries.set(entry.id, entry);
      this.onChange(entry);
      return entry;
    }
    get(id) {
      return this.entries.get(id);
    }
    bySession(sessionId) {
      return [...this.entries.values()].filter((e) => e.sessionId === sessionId);
    }
    byVideo(videoId) {
      return [...this.entries.values()].filter((e) => e.videoId === videoId);
    }
    /** Subjects worth resubscribing to after a reconnect, with the last sequence seen. */
    openSubjects() {
      const subjects = [];
      for (const entry of this.entries.values()) {
        if (FINAL_STATES.has(entry.state)) continue;
        if (entry.videoId) subjects.push({ video_id: entry.videoId, since: this.sequences.get(`video:${entry.videoId}`) ?? 0 });
        else if (entry.sessionId)
          subjects.push({ session_id: entry.sessionId, since: this.sequences.get(`session:${entry.sessionId}`) ?? 0 });
      }
      return subjects;
    }
    #update(entry, changes) {
      if (FINAL_STATES.has(entry.state) && !changes.force) return;
      delete changes.force;
      Object.assign(entry, changes);
      this.onChange(entry);
    }
    /** The one way into the error state: the outcome and its word come from the error's code. */
    #fail(entry, { status = null, code, message }) {
      if (entry.state === "error" && entry.error?.code === code) {
        if (status && !entry.error.status) this.#update(entry, { error: { ...entry.error, status }, force: true });
        return;
      }
      const outcome = outcomeOf({ status, code });
      this.#update(entry, { state: "error", speed: null, error: { status, code, message }, outcome, note: OUTCOME_LABELS[outcome] });
    }
    uploadStarted(id, sessionId) {
      const entry = this.get(id);
      if (!entry) return;
      this.#update(entry, { state: "uploading", sessionId: sessionId ?? entry.sessionId, note: "Uploading" });
      this.#drain();
    }
    progress(id, bytesSent, speed) {
      const entry = this.get(id);
      if (!entry || entry.state !== "uploading") return;
      this.#update(entry, { bytesSent, speed });
    }
    paused(id, paused) {
      const entry = this.get(id);
      if (!entry) return;
      if (paused && entry.state === "uploading") this.#update(entry, { state: "paused", speed: null, note: "Paused" });
      if (!paused && entry.state === "paused") this.#update(entry, { state: "uploading", note: "Uploading" });
    }
    cancelled(id) {
      const entry = this.get(id);
      if (entry) this.#update(entry, { state: "cancelled", speed: null, note: "Cancelled" });
    }
    /** The upload's bytes are all on the server (from the completing response's headers). */
    uploadFinished(id, { sessionId, videoId, duplicate }) {
      const entry = this.get(id);
      if (!entry) return;
      this.#update(entry, {
        state: "processing",
        bytesSent: entry.size,
        speed: null,
        sessionId: sessionId ?? entry.sessionId,
        videoId: videoId ?? entry.videoId,
        duplicate: Boolean(duplicate) || entry.duplicate,
        note: duplicate ? "Already uploaded: fetching the cached result" : "Uploaded: waiting for processing"
      });
      this.#drain();
    }
    /** The session view (GET /v1/upload/video/session/{id}), for what the headers did not say. */
    sessionView(id, view) {
      const entry = this.get(id);
      if (!entry || !view) return;
      if (view.status === "failed" || view.status === "expired" || view.status === "cancelled") {
        this.failed(id, { code: view.error_code ?? view.status, message: view.error_message ?? `The upload is ${view.status}.` });
        return;
      }
      const changes = {};
      if (view.video_id && !entry.videoId) changes.videoId = view.video_id;
      if (view.duplicate && !entry.duplicate) changes.duplicate = true;
      if (Object.keys(changes).length) this.#update(entry, changes);
      this.#drain();
    }
    failed(id, error) {
      const entry = this.get(id);
      if (entry) this.#fail(entry, error);
    }
    /** GET /v1/videos/{id}: returns true when the result is ready to be fetched. */
    videoStatus(videoId, view) {
      let ready = false;
      for (const entry of this.byVideo(videoId)) {
        if (FINAL_STATES.has(entry.state)) continue;
        if (view.status === "completed") ready = true;
        else if (view.status === "failed")
          this.#fail(entry, { code: "processing_failed", message: view.error_message ?? "Processing failed." });
        else this.#update(entry, { stage: view.stage ?? view.status, processingProgress: view.progress ?? null, note: `Processing: ${view.stage ?? view.status}` });
      }
      return ready;
    }
    result(videoId, result) {
      for (const entry of this.byVideo(videoId)) {
        if (!FINAL_STATES.has(entry.state) || entry.state === "done" && !entry.result)
          this.#update(entry, {
            ...UPLOADED(entry),
            state: "done",
            result,
            processingProgress: 1,
            stage: "done",
            note: entry.duplicate ? "Already uploaded: cached result" : "Processing done",
            force: true
          });
      }
    }
    /** One event from /ws. Returns the video ids whose result should now be fetched. */
    event(event) {
      if (!event || event.event_type === "heartbeat") return [];
      if (event.event_type === "events_expired") return [];
      if (event.event_id) {
        if (this.seen.has(event.event_id)) return [];
        this.seen.add(event.event_id);
        if (this.seen.size > SEEN_LIMIT) this.seen.delete(this.seen.values().next().value);
      }
      const subject = event.session_id ? `session:${event.session_id}` : event.video_id ? `video:${event.video_id}` : null;
      if (subject && event.sequence) this.sequences.set(subject, Math.max(event.sequence, this.sequences.get(subject) ?? 0));
      if (event.sequence) this.lastSequence = Math.max(event.sequence, this.lastSequence ?? 0);
      const applied = this.#apply(event);
      if (applied === null) {
        this.pending.push(event);
        if (this.pending.length > PENDING_LIMIT) this.pending.shift();
        return [];
      }
      return applied;
    }
    #drain() {
      const waiting = this.pending;
      this.pending = [];
      for (const event of waiting) {
        if (this.#apply(event) === null) this.pending.push(event);
      }
    }
    /** Apply an event to its entries; null when no entry is known for it yet. */
    #apply(event) {
      const data = event.data ?? {};
      const targets = event.session_id ? this.bySession(event.session_id) : [];
      const aboutVideo = event.event_type.startsWith("processing_") || !event.session_id;
      if (aboutVideo && event.video_id) {
        for (const e of this.byVideo(event.video_id)) if (!targets.includes(e)) targets.push(e);
      }
      if (targets.length === 0) return null;
      const fetchResults = [];
      for (const entry of targets) {
        switch (event.event_type) {
          case "upload_progress":
            if (entry.state === "uploading" && data.bytes_received > entry.bytesSent)
              this.#update(entry, { bytesSent: data.bytes_received });
            break;
          case "upload_completed":
            if (data.video_id && !entry.videoId) this.#update(entry, { videoId: data.video_id });
            break;
          case "upload_failed":
          case "session_expired":
            this.#fail(entry, {
              code: data.error_code ?? event.event_type,
              message: data.message ?? (event.event_type === "session_expired" ? "The upload session expired." : "The upload failed.")
            });
            break;
          case "duplicate_detected": {
            const changes = { duplicate: true, videoId: data.video_id ?? entry.videoId };
            if (data.cached_result && !FINAL_STATES.has(entry.state)) {
              Object.assign(changes, {
                state: "done",
                bytesSent: entry.size,
                speed: null,
                result: data.cached_result,
                processingProgress: 1,
                stage: "done",
                note: "Already uploaded: cached result"
              });
            } else if (!FINAL_STATES.has(entry.state)) {
              changes.note = "Already uploaded: waiting for the first upload to be processed";
              if (data.video_id) fetchResults.push(data.video_id);
            }
            this.#update(entry, changes);
            break;
          }
          case "processing_initiated":
            if (!FINAL_STATES.has(entry.state))
              this.#update(entry, { ...UPLOADED(entry), stage: "queued", note: "Processing started" });
            break;
          case "processing_progress":
            if (!FINAL_STATES.has(entry.state))
              this.#update(entry, {
                ...UPLOADED(entry),
                stage: data.stage,
                processingProgress: (data.progress_percentage ?? 0) / 100,
                note: `Processing: ${data.stage}`
              });
            break;
          case "processing_completed":
            if (!FINAL_STATES.has(entry.state)) {
              if (data.result) {
                this.#update(entry, {
                  ...UPLOADED(entry),
                  state: "done",
                  result: data.result,
                  processingProgress: 1,
                  stage: "done",
                  note: entry.duplicate ? "Already uploaded: cached result" : "Processing done"
                });
              } else if (event.video_id) fetchResults.push(event.video_id);
            }
            break;
          case "processing_failed":
            this.#fail(entry, { code: data.error_code ?? "processing_failed", message: data.message ?? "Processing failed." });
            break;
          default:
            break;
        }
      }
      return fetchResults;
    }
  };

  // src/live.js
  function eventsUrl(location, apiKey2, since = null) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const resume = Number.isInteger(since) && since >= 0 ? `&since=${since}` : "";
    return `${scheme}//${location.host}/ws?api_key=${encodeURIComponent(apiKey2)}&subscribe=all${resume}`;
  }
  var LiveEvents = class {
    /**
     * @param {object} options
     * @param {() => string} options.url            where to connect (called on every attempt)
     * @param {(event: object) => void} options.onEvent
     * @param {(state: string, detail?: string) => void} options.onState  connecting | open | closed
     * @param {() => object[]} options.openSubjects  [{session_id|video_id, since}] to catch up on
     * @param {typeof WebSocket} [options.WebSocketImpl]
     */
    constructor({ url, onEvent, onState = () => {
    }, openSubjects = () => [], WebSocketImpl = globalThis.WebSocket }) {
      this.url = url;
      this.onEvent = onEvent;
      this.onState = onState;
      this.openSubjects = openSubjects;
      this.WebSocketImpl = WebSocketImpl;
      this.socket = null;
      this.attempt = 0;
      this.timer = null;
      this.stopped = true;
      this.everConnected = false;
    }
    start() {
      this.stop();
      this.stopped = false;
      this.attempt = 0;
      this.#connect();
    }
    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      this.timer = null;
      if (this.socket) {
        const socket = this.socket;
        this.socket = null;
        socket.onclose = socket.onmessage = socket.onopen = socket.onerror = null;
        socket.close(1e3, "page closed the connection");
      }
    }
    #connect() {
      this.onState("connecting");
      let socket;
      try {
        socket = new this.WebSocketImpl(this.url());
      } catch (err) {
        this.onState("closed", String(err));
        this.#retry();
        return;
      }
      this.socket = socket;
      socket.onopen = () => {
        const reconnect = this.everConnected;
        this.everConnected = true;
        this.attempt = 0;
        this.onState("open");
        if (reconnect) {
          for (const subject of this.openSubjects()) socket.send(JSON.stringify({ action: "subscribe", ...subject }));
        }
      };
      socket.onmessage = (message) => {
        let event;
        try {
          event = JSON.parse(message.data);
        } catch {
          return;
        }
        this.onEvent(event);
      };
      socket.onclose = (close) => {
        if (this.socket !== socket) return;
        this.socket = null;
        const detail = close.code === 4008 ? "fell behind; catching up" : close.reason || `code ${close.code}`;
        this.onState("closed", detail);
        this.#retry(close.code === 4008 ? 0 : void 0);
      };
    }
    #retry(delay) {
      if (this.stopped) return;
      const wait = delay ?? Math.min(15e3, 500 * 2 ** this.attempt);
      this.attempt += 1;
      this.timer = setTimeout(() => this.#connect(), wait);
    }
  };

  // src/format.js
  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
  function formatBytes(bytes) {
    if (bytes == null || !Number.isFinite(bytes)) return "—";
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < UNITS.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${UNITS[unit]}`;
  }
  function formatSpeed(bytesPerSecond) {
    if (bytesPerSecond == null || !Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return "—";
    return `${formatBytes(bytesPerSecond)}/s`;
  }
  function formatDuration(seconds) {
    if (seconds == null || !Number.isFinite(seconds)) return "—";
    if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
    const whole = Math.round(seconds);
    const h = Math.floor(whole / 3600);
    const m = Math.floor(whole % 3600 / 60);
    const s = String(whole % 60).padStart(2, "0");
    return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }
  function formatPercent(fraction) {
    if (fraction == null || !Number.isFinite(fraction)) return "—";
    return `${(Math.max(0, Math.min(1, fraction)) * 100).toFixed(1)} %`;
  }
  function formatBitrate(bitsPerSecond) {
    if (bitsPerSecond == null || !Number.isFinite(bitsPerSecond)) return "—";
    if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(2)} Mbit/s`;
    return `${Math.round(bitsPerSecond / 1e3)} kbit/s`;
  }
  var SpeedMeter = class {
    constructor(windowMs = 3e3) {
      this.windowMs = windowMs;
      this.samples = [];
    }
    add(bytes, now) {
      this.samples.push([now, bytes]);
      while (this.samples.length > 2 && now - this.samples[1][0] >= this.windowMs) this.samples.shift();
      return this.speed();
    }
    speed() {
      if (this.samples.length < 2) return null;
      const [t0, b0] = this.samples[0];
      const [t1, b1] = this.samples[this.samples.length - 1];
      return t1 > t0 ? (b1 - b0) * 1e3 / (t1 - t0) : null;
    }
    reset() {
      this.samples = [];
    }
  };
  function summarizeResult(result) {
    const meta = result?.metadata ?? {};
    const video = meta.video ?? {};
    const audio = Array.isArray(meta.audio) ? meta.audio : [];
    const rows = [
      ["duration", "Duration", formatDuration(meta.duration)],
      ["resolution", "Resolution", video.width && video.height ? `${video.width}×${video.height}` : "—"],
      ["video_codec", "Video codec", video.codec ?? "—"],
      ["fps", "Frame rate", video.fps ? `${Number(video.fps).toFixed(2)} fps` : "—"],
      ["container", "Container", meta.container ?? "—"],
      ["bitrate", "Bitrate", formatBitrate(meta.bitrate)],
      ["audio", "Audio", audio.length ? audio.map((a) => `${a.codec}${a.channels ? ` ${a.channels}ch` : ""}`).join(", ") : "none"],
      ["size", "Size", formatBytes(meta.size_bytes)],
      ["keyframes", "Keyframes", result?.keyframes?.count ?? "—"],
      ["scene_cuts", "Scene cuts", result?.statistics?.scene_cuts?.length ?? "—"],
      ["fingerprint", "Fingerprint", result?.fingerprint ?? "—"],
      ["content_hash", "SHA-256", result?.content_hash ?? "—"],
      ["embeddings", "Embeddings", result?.embeddings ? embeddingText(result.embeddings) : "—"],
      ["similar_videos", "Similar videos", similarText(result?.similar_videos)],
      ["processing_seconds", "Processing time", formatDuration(result?.processing_seconds)]
    ];
    return rows.map(([field2, label, text]) => [field2, label, String(text)]);
  }
  function embeddingText(embeddings) {
    if (embeddings.status === "ok") return `${embeddings.model_type}, ${embeddings.dimension} dimensions`;
    return `${embeddings.status}${embeddings.reason ? ` (${embeddings.reason})` : ""}`;
  }
  function similarText(similar) {
    if (!Array.isArray(similar) || similar.length === 0) return "none";
    const name = (s) => s.video_id ? s.video_id.slice(0, 8) : "not yours";
    return similar.map((s) => `${name(s)} (${Math.round(s.similarity * 100)} %)`).join(", ");
  }

  // src/library.js
  var REVIEW_KEYS = { a: "approved", r: "rejected", e: "escalated" };
  var REFRESHING_EVENTS = /* @__PURE__ */ new Set([
    "upload_completed",
    "duplicate_detected",
    "processing_initiated",
    "processing_completed",
    "processing_failed",
    "video_reviewed",
    "video_deleted",
    "hash_match"
  ]);
  function listQuery(filters, cursor, limit) {
    const params = new URLSearchParams();
    if (limit) params.set("limit", String(limit));
    for (const name of ["status", "review", "filename"]) {
      const value = (filters?.[name] ?? "").trim();
      if (value) params.set(name, value);
    }
    if (cursor) params.set("cursor", cursor);
    const text = params.toString();
    return text ? `/v1/videos?${text}` : "/v1/videos";
  }
  function mergeItems(shown, page) {
    const seen = new Set(shown.map((item) => item.video_id));
    return [...shown, ...page.filter((item) => !seen.has(item.video_id))];
  }
  function tileStyle(index, tile, width) {
    const scale = width / index.tile_width;
    return {
      width: `${Math.round(index.tile_width * scale)}px`,
      height: `${Math.round(index.tile_height * scale)}px`,
      backgroundSize: `${Math.round(index.columns * index.tile_width * scale)}px ${Math.round(index.rows * index.tile_height * scale)}px`,
      backgroundPosition: `-${Math.round(tile.x * scale)}px -${Math.round(tile.y * scale)}px`
    };
  }
  function cutPositions(cuts, duration) {
    if (!Array.isArray(cuts) || !duration) return [];
    return cuts.filter((t) => t >= 0 && t <= duration).map((t) => Math.round(t / duration * 1e3) / 10);
  }
  function moveSelection(index, key2, count, columns) {
    if (count === 0) return -1;
    const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns, ArrowDown: columns }[key2] ?? 0;
    if (index < 0) return 0;
    return Math.max(0, Math.min(count - 1, index + step));
  }
  var $ = (selector, root = document) => root.querySelector(selector);
  var Library = class {
    /**
     * @param {object} options
     * @param {(path: string, init?: object) => Promise<any>} options.request  JSON API call with the key
     */
    constructor({ request }) {
      this.request = request;
      this.items = [];
      this.cursor = null;
      this.done = false;
      this.loading = null;
      this.generation = 0;
      this.selected = -1;
      this.detailId = null;
      this.role = null;
      this.refreshTimer = null;
      this.ui = {
        section: $("#library"),
        filters: $("#library-filters"),
        status: $("#filter-status"),
        review: $("#filter-review"),
        filename: $("#filter-filename"),
        note: $("#library-note"),
        grid: $("#library-grid"),
        more: $("#load-more"),
        sentinel: $("#library-sentinel"),
        detail: $("#library-detail"),
        card: $("#card-template")
      };
      this.#wire();
    }
    get visible() {
      return !this.ui.section.hidden;
    }
    /** A key was accepted (its role decides which buttons show); start over. */
    setKey(role) {
      this.role = role;
      this.ui.section.dataset.role = role ?? "unknown";
      this.reload();
    }
    clear() {
      this.role = null;
      this.generation += 1;
      this.items = [];
      this.ui.grid.replaceChildren();
      this.closeDetail();
    }
    filters() {
      return { status: this.ui.status.value, review: this.ui.review.value, filename: this.ui.filename.value };
    }
    reload() {
      this.generation += 1;
      this.items = [];
      this.cursor = null;
      this.done = false;
      this.loading = null;
      this.selected = -1;
      this.ui.grid.replaceChildren();
      this.ui.note.textContent = "Loading…";
      this.ui.note.dataset.state = "loading";
      return this.loadMore();
    }
    async loadMore() {
      if (this.done || this.role == null) return;
      if (this.loading) return this.loading;
      const generation = this.generation;
      this.loading = (async () => {
        try {
          const page = await this.request(listQuery(this.filters(), this.cursor));
          if (generation !== this.generation) return;
          this.cursor = page.next_cursor;
          this.done = page.next_cursor == null;
          const fresh = mergeItems(this.items, page.items).slice(this.items.length);
          this.items.push(...fresh);
          for (const item of fresh) this.ui.grid.append(this.#card(item));
          this.#note();
        } catch (err) {
          if (generation === this.generation) this.#note(`Could not list the videos: ${err.message}`);
        } finally {
          if (generation === this.generation) this.loading = null;
        }
      })();
      await this.loading;
      if (generation === this.generation && !this.done && this.#sentinelVisible()) return this.loadMore();
    }
    /** A live event of this key's user: refresh what it changes (debounced: events come in bursts). */
    onEvent(event) {
      if (!REFRESHING_EVENTS.has(event.event_type) || this.role == null) return;
      if (event.event_type === "video_deleted") this.#removeCard(event.video_id);
      clearTimeout(this.refreshTimer);
      this.refreshTimer = setTimeout(() => this.#refresh(event), 300);
    }
    async #refresh(event) {
      const generation = this.generation;
      let page;
      try {
        page = await this.request(listQuery(this.filters(), null));
      } catch {
        return;
      }
      if (generation !== this.generation) return;
      const known = new Map(this.items.map((item, i) => [item.video_id, i]));
      const added = [];
      for (const item of page.items) {
        if (known.has(item.video_id)) {
          const i = known.get(item.video_id);
          this.items[i] = item;
          const old = this.ui.grid.querySelector(`[data-video-id="${CSS.escape(item.video_id)}"]`);
          if (old) old.replaceWith(this.#card(item));
        } else if (this.items.length === 0 || item.created_at >= this.items[0].created_at) {
          added.push(item);
        }
      }
      this.items.unshift(...added);
      this.ui.grid.prepend(...added.map((item) => this.#card(item)));
      if (this.done && page.next_cursor == null && this.items.length <= page.items.length) this.cursor = null;
      this.#highlight();
      this.#note();
      if (this.detailId && event.video_id === this.detailId && event.event_type !== "video_deleted") this.open(this.detailId);
    }
    #note(text) {
      const count = this.items.length;
      this.ui.note.textContent = text ?? (count === 0 ? "No videos here yet." : `${count} video${count === 1 ? "" : "s"}${this.done ? "" : ", more below"}`);
      this.ui.note.dataset.state = text ? "error" : "ok";
      this.ui.more.hidden = this.done;
    }
    #card(item) {
      const li = this.ui.card.content.firstElementChild.cloneNode(true);
      li.dataset.videoId = item.video_id;
      li.dataset.status = item.status;
      li.dataset.review = item.review_state;
      const img = li.querySelector("img");
      img.alt = item.filename ?? item.video_id;
      if (item.status === "completed" && item.urls) img.src = item.urls.poster;
      else img.hidden = true;
      li.querySelector('[data-field="name"]').textContent = item.filename ?? "(no name)";
      li.querySelector('[data-field="status"]').textContent = item.status;
      li.querySelector('[data-field="duration"]').textContent = formatDuration(item.duration);
      li.querySelector('[data-field="review"]').textContent = item.review_state;
      li.querySelector("button").addEventListener("click", () => this.open(item.video_id));
      return li;
    }
    #removeCard(videoId) {
      const index = this.items.findIndex((item) => item.video_id === videoId);
      if (index >= 0) this.items.splice(index, 1);
      this.ui.grid.querySelector(`[data-video-id="${CSS.escape(videoId)}"]`)?.remove();
      if (this.detailId === videoId) this.closeDetail();
      this.#note();
    }
    #highlight() {
      const cards = [...this.ui.grid.children];
      cards.forEach((card, i) => card.classList.toggle("selected", i === this.selected));
    }
    // ------------------------------------------------------------ detail
    async open(videoId) {
      this.detailId = videoId;
      this.selected = this.items.findIndex((item2) => item2.video_id === videoId);
      this.#highlight();
      const panel = this.ui.detail;
      panel.hidden = false;
      panel.dataset.videoId = videoId;
      panel.dataset.state = "loading";
      const item = this.items.find((i) => i.video_id === videoId);
      let urls, result, reviews;
      try {
        ;
        [urls, reviews] = await Promise.all([
          this.request(`/v1/videos/${videoId}/urls`),
          this.request(`/v1/videos/${videoId}/reviews`)
        ]);
        result = item?.status === "completed" ? await this.request(`/v1/videos/${videoId}/result`) : null;
      } catch (err) {
        if (this.detailId !== videoId) return;
        panel.dataset.state = "error";
        $('[data-field="detail-error"]', panel).textContent = err.message;
        return;
      }
      if (this.detailId !== videoId) return;
      this.#fillDetail(videoId, item, urls, result, reviews);
      panel.dataset.state = "ready";
      panel.scrollIntoView({ block: "nearest" });
    }
    closeDetail() {
      this.detailId = null;
      const panel = this.ui.detail;
      panel.hidden = true;
      panel.dataset.state = "closed";
      const player = $("video", panel);
      player.pause();
      if (player.dataset.src) {
        delete player.dataset.src;
        player.removeAttribute("src");
        player.load();
      }
    }
    #fillDetail(videoId, item, urls, result, reviews) {
      const panel = this.ui.detail;
      const player = $("video", panel);
      const source = urls.content;
      if (player.dataset.src !== source) {
        player.dataset.src = source;
        player.src = source;
      }
      $('[data-field="title"]', panel).textContent = item?.filename ?? videoId;
      const meta = result?.metadata ?? {};
      const video = meta.video ?? {};
      const rows = [
        ["status", "Status", item?.status ?? "—"],
        ["duration", "Duration", formatDuration(meta.duration ?? item?.duration)],
        ["resolution", "Resolution", video.width ? `${video.width}×${video.height}` : item?.width ? `${item.width}×${item.height}` : "—"],
        ["video_codec", "Video codec", video.codec ?? "—"],
        ["container", "Container", meta.container ?? item?.container ?? "—"],
        ["size", "Size", formatBytes(item?.file_size)],
        ["uploaded", "Uploaded", item ? new Date(item.created_at).toLocaleString() : "—"],
        ["content_hash", "SHA-256", item?.content_hash ?? "—"],
        ["scene_cuts", "Scene cuts", result?.statistics?.scene_cuts?.length ?? "—"]
      ];
      this.#definitionList($('[data-field="metadata"]', panel), rows);
      this.#moderation($('[data-field="moderation"]', panel), result?.moderation);
      this.#timeline($(".timeline", panel), result?.statistics?.scene_cuts ?? [], meta.duration ?? item?.duration);
      this.#similar($('[data-field="similar"]', panel), result?.similar_videos ?? []);
      this.#reviews(panel, reviews);
      const strip = $(".storyboard", panel);
      strip.replaceChildren();
      if (result) this.#storyboard(strip, urls.storyboard_index, player);
      const confirm = $(".confirm-delete", panel);
      confirm.hidden = true;
      $('[data-field="action-error"]', panel).textContent = "";
    }
    #definitionList(dl, rows) {
      dl.replaceChildren();
      for (const [field2, label, text] of rows) {
        const dt = document.createElement("dt");
        dt.textContent = label;
        const dd = document.createElement("dd");
        dd.dataset.field = field2;
        dd.textContent = String(text);
        dl.append(dt, dd);
      }
    }
    #moderation(box, moderation) {
      box.replaceChildren();
      box.dataset.flagged = String(Boolean(moderation?.flagged));
      const head = document.createElement("p");
      if (!moderation) {
        head.textContent = "No moderation signals yet.";
        box.append(head);
        return;
      }
      head.textContent = moderation.flagged ? "Flagged for review" : "Not flagged";
      head.className = moderation.flagged ? "flag bad" : "flag ok";
      box.append(head);
      const nsfw = moderation.nsfw ?? {};
      const score = document.createElement("p");
      score.dataset.field = "nsfw";
      score.textContent = nsfw.status === "ok" ? `Explicit-content score: max ${Number(nsfw.max ?? 0).toFixed(3)}, mean ${Number(nsfw.mean ?? 0).toFixed(3)} (threshold ${nsfw.threshold})` : `Explicit-content classifier: ${nsfw.status}${nsfw.reason ? ` (${nsfw.reason})` : ""}`;
      box.append(score);
      const list = document.createElement("ul");
      for (const reason of moderation.reasons ?? []) {
        const li = document.createElement("li");
        li.textContent = reason.message;
        list.append(li);
      }
      for (const match of moderation.hash_matches ?? []) {
        const li = document.createElement("li");
        li.dataset.field = "hash-match";
        li.textContent = `Hash bank ${match.bank}: ${match.entry_name ?? `entry ${match.entry_id}`}`;
        list.append(li);
      }
      if (list.children.length) box.append(list);
    }
    #timeline(bar, cuts, duration) {
      bar.replaceChildren();
      for (const left of cutPositions(cuts, duration)) {
        const mark = document.createElement("span");
        mark.className = "cut";
        mark.style.left = `${left}%`;
        bar.append(mark);
      }
    }
    #similar(box, similar) {
      box.replaceChildren();
      const mine = similar.filter((s) => s.video_id);
      if (mine.length === 0) {
        box.textContent = "none";
        return;
      }
      for (const match of mine) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "similar";
        button.dataset.videoId = match.video_id;
        const known = this.items.find((item) => item.video_id === match.video_id);
        if (known?.urls && known.status === "completed") {
          const img = document.createElement("img");
          img.src = known.urls.poster;
          img.alt = "";
          button.append(img);
        }
        const label = document.createElement("span");
        label.textContent = `${known?.filename ?? match.video_id} · ${Math.round(match.similarity * 100)} %`;
        button.append(label);
        button.addEventListener("click", () => this.open(match.video_id));
        box.append(button);
      }
    }
    async #storyboard(strip, indexUrl, player) {
      let index;
      try {
        const res = await fetch(indexUrl);
        if (!res.ok) return;
        index = await res.json();
      } catch {
        return;
      }
      for (const tile of index.tiles) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "tile";
        button.title = formatDuration(tile.start);
        button.dataset.start = String(tile.start);
        Object.assign(button.style, tileStyle(index, tile, 96), { backgroundImage: `url("${index.url}")` });
        button.addEventListener("click", () => {
          player.currentTime = tile.start;
        });
        strip.append(button);
      }
    }
    #reviews(panel, history) {
      $('[data-field="review-state"]', panel).textContent = history.state;
      const list = $(".review-history", panel);
      list.replaceChildren();
      for (const review of history.reviews) {
        const li = document.createElement("li");
        li.dataset.decision = review.decision;
        const who = review.key_label ?? review.key_id ?? review.key_role;
        li.textContent = `${review.decision} · ${new Date(review.created_at).toLocaleString()} · ${who}${review.note ? ` · ${review.note}` : ""}`;
        list.append(li);
      }
      const mayReview = this.role === "reviewer" || this.role === "admin";
      $(".review-actions", panel).hidden = !mayReview;
      $(".delete", panel).hidden = !(this.role === "uploader" || this.role === "admin");
    }
    async decide(decision) {
      const videoId = this.detailId;
      if (!videoId || !(this.role === "reviewer" || this.role === "admin")) return;
      const panel = this.ui.detail;
      const note = $("#review-note", panel).value.trim();
      try {
        await this.request(`/v1/videos/${videoId}/review`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(note ? { decision, note } : { decision })
        });
      } catch (err) {
        $('[data-field="action-error"]', panel).textContent = `${err.code ?? "error"}: ${err.message}`;
        return;
      }
      $("#review-note", panel).value = "";
      const history = await this.request(`/v1/videos/${videoId}/reviews`);
      if (this.detailId !== videoId) return;
      this.#reviews(panel, history);
      const item = this.items.find((i) => i.video_id === videoId);
      if (item) {
        item.review_state = history.state;
        const card = this.ui.grid.querySelector(`[data-video-id="${CSS.escape(videoId)}"]`);
        if (card) {
          card.dataset.review = history.state;
          card.querySelector('[data-field="review"]').textContent = history.state;
        }
      }
    }
    async deleteOpen() {
      const videoId = this.detailId;
      if (!videoId) return;
      const panel = this.ui.detail;
      try {
        await this.request(`/v1/videos/${videoId}`, { method: "DELETE" });
      } catch (err) {
        $('[data-field="action-error"]', panel).textContent = `${err.code ?? "error"}: ${err.message}`;
        return;
      }
      this.#removeCard(videoId);
    }
    // ------------------------------------------------------------ wiring
    #sentinelVisible() {
      const box = this.ui.sentinel.getBoundingClientRect();
      return this.visible && box.top < window.innerHeight + 200;
    }
    #columns() {
      const cards = [...this.ui.grid.children];
      if (cards.length < 2) return 1;
      const top = cards[0].offsetTop;
      const inRow = cards.findIndex((card) => card.offsetTop !== top);
      return inRow < 0 ? cards.length : inRow;
    }
    #wire() {
      const ui2 = this.ui;
      let typing;
      ui2.filters.addEventListener("submit", (event) => {
        event.preventDefault();
        this.reload();
      });
      for (const select of [ui2.status, ui2.review]) select.addEventListener("change", () => this.reload());
      ui2.filename.addEventListener("input", () => {
        clearTimeout(typing);
        typing = setTimeout(() => this.reload(), 300);
      });
      ui2.more.addEventListener("click", () => this.loadMore());
      new IntersectionObserver((entries) => {
        if (entries.some((entry) => entry.isIntersecting) && this.visible) this.loadMore();
      }, { rootMargin: "200px" }).observe(ui2.sentinel);
      const panel = ui2.detail;
      $(".close", panel).addEventListener("click", () => this.closeDetail());
      for (const button of panel.querySelectorAll(".review-actions [data-decision]")) {
        button.addEventListener("click", () => this.decide(button.dataset.decision));
      }
      $(".delete", panel).addEventListener("click", () => {
        $(".confirm-delete", panel).hidden = false;
        $(".confirm-delete .really", panel).focus();
      });
      $(".confirm-delete .really", panel).addEventListener("click", () => this.deleteOpen());
      $(".confirm-delete .keep", panel).addEventListener("click", () => {
        $(".confirm-delete", panel).hidden = true;
      });
      document.addEventListener("keydown", (event) => {
        if (!this.visible || event.altKey || event.ctrlKey || event.metaKey) return;
        const target = event.target;
        if (target instanceof HTMLElement && target.closest("input, textarea, select, video")) return;
        if (event.key.startsWith("Arrow") && this.items.length) {
          event.preventDefault();
          this.selected = moveSelection(this.selected, event.key, this.items.length, this.#columns());
          this.#highlight();
          const item = this.items[this.selected];
          this.ui.grid.children[this.selected]?.scrollIntoView({ block: "nearest" });
          if (item) this.open(item.video_id);
        } else if (REVIEW_KEYS[event.key] && this.detailId) {
          event.preventDefault();
          this.decide(REVIEW_KEYS[event.key]);
        } else if (event.key === "Escape" && this.detailId) {
          this.closeDetail();
        }
      });
    }
  };

  // src/app.js
  var KEY_STORAGE = "vidgate.apiKey";
  var OPTIONS_STORAGE = "vidgate.uploadOptions";
  var TUS_ENDPOINT = new URL("/v1/tus/", window.location.href).href;
  var MAX_ACTIVE_UPLOADS = 2;
  var RETRY_DELAYS = [0, 1e3, 3e3, 5e3, 1e4, 2e4];
  var MiB = 1024 * 1024;
  var $2 = (selector, root = document) => root.querySelector(selector);
  var ui = {
    keyInput: $2("#api-key"),
    keyToggle: $2("#toggle-key"),
    keyStatus: $2("#api-key-status"),
    chunkSize: $2("#chunk-size"),
    priority: $2("#priority"),
    parallel: $2("#parallel"),
    checksum: $2("#checksum"),
    dropzone: $2("#dropzone"),
    fileInput: $2("#file-input"),
    liveStatus: $2("#live-status"),
    list: $2("#uploads"),
    empty: $2("#empty-note"),
    template: $2("#upload-template")
  };
  var uploads = /* @__PURE__ */ new Map();
  var items = /* @__PURE__ */ new Map();
  var tracker = new Tracker((entry) => render(entry));
  var checksumAlgorithm = null;
  var checksumDiscovery = null;
  var live = new LiveEvents({
    url: () => eventsUrl(window.location, apiKey(), tracker.lastSequence),
    onEvent: (event) => {
      if (event.event_type === "events_expired") {
        for (const entry of tracker.entries.values()) followUp(entry.id);
        return;
      }
      for (const videoId of tracker.event(event)) fetchResult(videoId);
      library.onEvent(event);
    },
    onState: (state, detail) => {
      ui.liveStatus.dataset.state = state;
      ui.liveStatus.textContent = state === "open" ? "Live updates: connected" : state === "connecting" ? "Live updates: connecting…" : `Live updates: disconnected${detail ? ` (${detail})` : ""}, retrying`;
    },
    openSubjects: () => tracker.openSubjects()
  });
  function apiKey() {
    return ui.keyInput.value.trim();
  }
  function authHeaders() {
    return { "X-API-Key": apiKey() };
  }
  async function getJson(path, init = {}) {
    const res = await fetch(path, { ...init, headers: { ...init.headers ?? {}, ...authHeaders() } });
    const text = await res.text();
    if (!res.ok) {
      const error = parseErrorBody(text) ?? { code: `http_${res.status}`, message: text };
      throw Object.assign(new Error(error.message), { status: res.status, code: error.code });
    }
    return JSON.parse(text).data;
  }
  var library = new Library({ request: getJson });
  function loadSettings() {
    ui.keyInput.value = localStorage.getItem(KEY_STORAGE) ?? "";
    try {
      const saved = JSON.parse(localStorage.getItem(OPTIONS_STORAGE) ?? "{}");
      for (const name of ["chunkSize", "priority", "parallel"]) if (saved[name] != null) ui[name].value = saved[name];
      if (saved.checksum != null) ui.checksum.checked = Boolean(saved.checksum);
    } catch {
      localStorage.removeItem(OPTIONS_STORAGE);
    }
  }
  function saveOptions() {
    localStorage.setItem(
      OPTIONS_STORAGE,
      JSON.stringify({
        chunkSize: ui.chunkSize.value,
        priority: ui.priority.value,
        parallel: ui.parallel.value,
        checksum: ui.checksum.checked
      })
    );
  }
  function uploadOptions() {
    const clamp = (input, low, high, fallback, parse = (text) => Number.parseInt(text, 10)) => {
      const value = parse(input.value);
      return Number.isFinite(value) ? Math.min(high, Math.max(low, value)) : fallback;
    };
    return {
      chunkSize: Math.round(clamp(ui.chunkSize, 1 / 16, 1024, 10, Number.parseFloat) * MiB),
      priority: clamp(ui.priority, 1, 10, 5),
      parallel: clamp(ui.parallel, 1, 8, 1),
      checksum: ui.checksum.checked
    };
  }
  var keyCheck = 0;
  var checkedKey = null;
  async function keyChanged() {
    const key2 = apiKey();
    if (key2) localStorage.setItem(KEY_STORAGE, key2);
    else localStorage.removeItem(KEY_STORAGE);
    if (key2 && key2 === checkedKey && ui.keyStatus.dataset.state === "ok") return;
    checkedKey = key2;
    const check = ++keyCheck;
    if (!key2) {
      setKeyStatus("missing", "Enter an API key to upload.");
      library.clear();
      live.stop();
      ui.liveStatus.dataset.state = "closed";
      ui.liveStatus.textContent = "Live updates: waiting for an API key";
      return;
    }
    setKeyStatus("checking", "Checking the key…");
    let state;
    let text;
    let role = null;
    try {
      const res = await fetch("/v1/me", { headers: authHeaders() });
      if (res.ok) {
        const me = (await res.json()).data;
        state = "ok";
        role = me.key?.role ?? "viewer";
        text = `Key accepted: uploads go to ${me.username}.`;
      } else if (res.status === 401) {
        state = "refused";
        text = "The server refused this key (unknown or revoked).";
      } else {
        state = "unreachable";
        text = `The server could not check the key (HTTP ${res.status}).`;
      }
    } catch {
      state = "unreachable";
      text = "The server cannot be reached.";
    }
    if (check !== keyCheck) return;
    setKeyStatus(state, text);
    if (state === "refused") {
      library.clear();
      live.stop();
      return;
    }
    if (state === "ok") library.setKey(role);
    tracker.lastSequence = null;
    live.start();
    pump();
  }
  function setKeyStatus(state, text) {
    ui.keyStatus.dataset.state = state;
    ui.keyStatus.textContent = text;
  }
  function addFiles(files) {
    for (const file of files) {
      const entry = tracker.add(file);
      uploads.set(entry.id, { file, upload: null, meter: new SpeedMeter(), completion: {} });
    }
    pump();
  }
  async function pump() {
    if (ui.keyStatus.dataset.state === "refused" || !apiKey()) return;
    checksumDiscovery ??= discoverChecksumAlgorithm(TUS_ENDPOINT);
    checksumAlgorithm = await checksumDiscovery;
    const entries = [...tracker.entries.values()];
    let active = entries.filter((e) => e.state === "uploading").length;
    for (const entry of entries) {
      if (active >= MAX_ACTIVE_UPLOADS) break;
      if (entry.state === "queued" && !uploads.get(entry.id).upload) {
        startUpload(entry);
        active += 1;
      }
    }
  }
  function urlsInUse() {
    return new Set([...uploads.values()].map((u) => u.upload?.url).filter(Boolean));
  }
  function sessionIdOf(url) {
    const last = new URL(url, window.location.href).pathname.split("/").filter(Boolean).pop();
    return last ? decodeURIComponent(last) : null;
  }
  function completionOf(res) {
    const videoId = res?.getHeader("Vidgate-Video-Id");
    if (!videoId) return null;
    return {
      sessionId: res.getHeader("Vidgate-Session-Id") || null,
      videoId,
      duplicate: (res.getHeader("Vidgate-Duplicate") || "").toLowerCase() === "true"
    };
  }
  function shouldRetry2(err) {
    const res = err?.originalResponse;
    if (!res) return navigator.onLine !== false;
    const status = res.getStatus();
    if (status === 409) return parseErrorBody(res.getBody())?.code !== "session_not_active";
    return status === 423 || status === 429 || status === 503 || status === 507 || status >= 500 && status !== 501;
  }
  async function startUpload(entry) {
    const state = uploads.get(entry.id);
    const { file, meter } = state;
    const opts = uploadOptions();
    const metadata = { filename: file.name, priority: String(opts.priority) };
    if (file.type) metadata.filetype = file.type;
    const options = {
      endpoint: TUS_ENDPOINT,
      chunkSize: opts.chunkSize,
      retryDelays: RETRY_DELAYS,
      parallelUploads: opts.parallel,
      headers: authHeaders(),
      metadata,
      removeFingerprintOnSuccess: true,
      onShouldRetry: shouldRetry2,
      onUploadUrlAvailable: () => tracker.uploadStarted(entry.id, sessionIdOf(upload.url)),
      onProgress: (sent) => {
        tracker.progress(entry.id, sent, meter.add(sent, performance.now()));
      },
      onAfterResponse: (_req, res) => {
        const done = completionOf(res);
        if (done) state.completion = done;
      },
      onSuccess: ({ lastResponse }) => {
        const done = completionOf(lastResponse) ?? state.completion;
        const sessionId = done.sessionId ?? (upload.url ? sessionIdOf(upload.url) : null);
        tracker.uploadFinished(entry.id, { ...done, sessionId });
        followUp(entry.id);
        pump();
      },
      onError: (err) => {
        const error = describeUploadError(err);
        tracker.failed(entry.id, error);
        pump();
      }
    };
    if (opts.checksum && checksumAlgorithm) options.httpStack = new ChecksumHttpStack(new XHRHttpStack(), checksumAlgorithm);
    const upload = new Upload(file, options);
    state.upload = upload;
    tracker.uploadStarted(entry.id, null);
    try {
      const inUse = urlsInUse();
      const previous = (await upload.findPreviousUploads()).filter(
        (p) => (p.uploadUrl || p.parallelUploadUrls) && !inUse.has(p.uploadUrl)
      );
      if (previous.length > 0) {
        upload.resumeFromPreviousUpload(previous[0]);
        if (previous[0].uploadUrl) tracker.uploadStarted(entry.id, sessionIdOf(previous[0].uploadUrl));
      }
    } catch {
    }
    meter.reset();
    upload.start();
  }
  function pauseOrResume(id) {
    const entry = tracker.get(id);
    const { upload, meter } = uploads.get(id);
    if (!upload) return;
    if (entry.state === "uploading") {
      upload.abort();
      tracker.paused(id, true);
    } else if (entry.state === "paused") {
      meter.reset();
      tracker.paused(id, false);
      upload.start();
    }
  }
  function cancel(id) {
    const { upload } = uploads.get(id);
    tracker.cancelled(id);
    upload?.abort(true).catch(() => {
    });
    pump();
  }
  async function followUp(id) {
    const entry = tracker.get(id);
    if (!entry || FINAL_STATES.has(entry.state) && entry.state !== "error") return;
    try {
      if (!entry.videoId && entry.sessionId) {
        tracker.sessionView(id, await getJson(`/v1/upload/video/session/${encodeURIComponent(entry.sessionId)}`));
      }
      if (entry.videoId && !FINAL_STATES.has(entry.state)) {
        const view = await getJson(`/v1/videos/${encodeURIComponent(entry.videoId)}`);
        if (tracker.videoStatus(entry.videoId, view)) await fetchResult(entry.videoId);
      }
    } catch {
    }
  }
  var fetching = /* @__PURE__ */ new Set();
  async function fetchResult(videoId) {
    if (fetching.has(videoId)) return;
    fetching.add(videoId);
    try {
      tracker.result(videoId, await getJson(`/v1/videos/${encodeURIComponent(videoId)}/result`));
    } catch {
    } finally {
      fetching.delete(videoId);
    }
  }
  var lastPoll = 0;
  setInterval(() => {
    const interval = ui.liveStatus.dataset.state === "open" ? 5e3 : 2e3;
    if (performance.now() - lastPoll < interval) return;
    lastPoll = performance.now();
    for (const entry of tracker.entries.values()) if (entry.state === "processing") followUp(entry.id);
  }, 500);
  function field(li, name) {
    return li.querySelector(`[data-field="${name}"]`);
  }
  var STATE_LABELS = {
    queued: "Queued",
    uploading: "Uploading",
    paused: "Paused",
    processing: "Processing",
    done: "Done",
    cancelled: "Cancelled"
  };
  function stateLabel(entry) {
    if (entry.state === "error") return OUTCOME_LABELS[entry.outcome ?? "failed"];
    return STATE_LABELS[entry.state] ?? entry.state;
  }
  function itemFor(entry) {
    let li = items.get(entry.id);
    if (li) return li;
    li = ui.template.content.firstElementChild.cloneNode(true);
    li.dataset.uploadId = entry.id;
    li.dataset.filename = entry.name;
    field(li, "name").textContent = entry.name;
    field(li, "size").textContent = formatBytes(entry.size);
    const bar = li.querySelector(".upload-progress");
    bar.setAttribute("aria-label", `Upload of ${entry.name}`);
    li.querySelector(".processing-progress").setAttribute("aria-label", `Processing of ${entry.name}`);
    li.querySelector(".pause").addEventListener("click", () => pauseOrResume(entry.id));
    li.querySelector(".cancel").addEventListener("click", () => cancel(entry.id));
    items.set(entry.id, li);
    ui.list.append(li);
    ui.empty.hidden = true;
    return li;
  }
  function render(entry) {
    const li = itemFor(entry);
    li.dataset.state = entry.state;
    if (entry.outcome) li.dataset.outcome = entry.outcome;
    else delete li.dataset.outcome;
    li.dataset.bytesSent = String(entry.bytesSent);
    li.dataset.duplicate = String(entry.duplicate);
    if (entry.sessionId) li.dataset.sessionId = entry.sessionId;
    if (entry.videoId) li.dataset.videoId = entry.videoId;
    const label = stateLabel(entry);
    field(li, "state").textContent = label;
    const fraction = entry.size > 0 ? entry.bytesSent / entry.size : entry.state === "queued" ? 0 : 1;
    const bar = li.querySelector(".upload-progress");
    bar.value = entry.outcome === "refused" ? 1 : Math.min(1, fraction);
    bar.setAttribute(
      "aria-valuetext",
      entry.state === "error" ? entry.outcome === "refused" ? label : `${label} at ${formatPercent(fraction)}` : formatPercent(fraction)
    );
    li.querySelector(".numbers").hidden = !(entry.state === "uploading" || entry.state === "paused");
    field(li, "percent").textContent = formatPercent(fraction);
    field(li, "speed").textContent = entry.state === "uploading" ? formatSpeed(entry.speed) : "—";
    const remaining = entry.speed ? (entry.size - entry.bytesSent) / entry.speed : null;
    field(li, "eta").textContent = entry.state === "uploading" && remaining != null ? `${formatDuration(remaining)} left` : "";
    const note = field(li, "note");
    note.textContent = entry.note ?? "";
    note.hidden = entry.state === "error" || entry.state === "done" && entry.duplicate;
    const processing = li.querySelector(".processing-progress");
    processing.hidden = entry.state !== "processing";
    if (entry.processingProgress != null) processing.value = entry.processingProgress;
    else processing.removeAttribute("value");
    li.querySelector(".duplicate-notice").hidden = !entry.duplicate;
    const error = li.querySelector(".error");
    error.hidden = !entry.error;
    if (entry.error) {
      li.dataset.errorCode = entry.error.code ?? "";
      field(li, "error-code").textContent = entry.error.code ?? "error";
      field(li, "error-message").textContent = entry.error.message ?? "";
      field(li, "error-outcome").textContent = label;
      field(li, "error-status").textContent = entry.error.status ? ` (HTTP ${entry.error.status})` : "";
    }
    const result = li.querySelector(".result");
    if (entry.result && result.hidden) {
      const summary = result.querySelector(".result-summary");
      summary.replaceChildren();
      for (const [name, label2, text] of summarizeResult(entry.result)) {
        const dt = document.createElement("dt");
        dt.textContent = label2;
        const dd = document.createElement("dd");
        dd.dataset.field = name;
        dd.textContent = text;
        summary.append(dt, dd);
      }
      result.querySelector(".result-json").textContent = JSON.stringify(entry.result, null, 2);
      result.hidden = false;
    }
    const pause = li.querySelector(".pause");
    pause.textContent = entry.state === "paused" ? "Resume" : "Pause";
    pause.hidden = !(entry.state === "uploading" || entry.state === "paused");
    li.querySelector(".cancel").hidden = !(entry.state === "queued" || entry.state === "uploading" || entry.state === "paused");
  }
  function showView(view) {
    const isLibrary = view === "library";
    $2("#upload-view").hidden = isLibrary;
    $2("#library").hidden = !isLibrary;
    document.body.classList.toggle("library-wide", isLibrary);
    $2("#show-upload").setAttribute("aria-pressed", String(!isLibrary));
    $2("#show-library").setAttribute("aria-pressed", String(isLibrary));
    document.body.dataset.view = view;
    if (isLibrary) library.loadMore();
  }
  function wire() {
    loadSettings();
    let typing;
    ui.keyInput.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(keyChanged, 400);
    });
    ui.keyInput.addEventListener("change", () => {
      clearTimeout(typing);
      keyChanged();
    });
    ui.keyToggle.addEventListener("click", () => {
      const shown = ui.keyInput.type === "text";
      ui.keyInput.type = shown ? "password" : "text";
      ui.keyToggle.textContent = shown ? "Show" : "Hide";
      ui.keyToggle.setAttribute("aria-pressed", String(!shown));
    });
    for (const input of [ui.chunkSize, ui.priority, ui.parallel, ui.checksum]) input.addEventListener("change", saveOptions);
    $2("#settings-form").addEventListener("submit", (event) => {
      event.preventDefault();
      keyChanged();
    });
    ui.fileInput.addEventListener("change", () => {
      addFiles([...ui.fileInput.files]);
      ui.fileInput.value = "";
    });
    const zone = ui.dropzone;
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (event) => {
        event.preventDefault();
        event.dataTransfer.dropEffect = "copy";
        zone.dataset.state = "over";
      });
    }
    zone.addEventListener("dragleave", (event) => {
      if (!zone.contains(event.relatedTarget)) zone.dataset.state = "idle";
    });
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.dataset.state = "idle";
      addFiles([...event.dataTransfer?.files ?? []]);
    });
    for (const type of ["dragover", "drop"]) window.addEventListener(type, (event) => event.preventDefault());
    window.addEventListener("beforeunload", (event) => {
      if ([...tracker.entries.values()].some((e) => e.state === "uploading")) event.preventDefault();
    });
    for (const [button, view] of [
      ["#show-upload", "upload"],
      ["#show-library", "library"]
    ]) {
      $2(button).addEventListener("click", () => showView(view));
    }
    keyChanged();
    document.body.dataset.ready = "true";
  }
  wire();
})();
/*! Bundled license information:

tus-js-client/lib.esm/upload.js:
tus-js-client/lib.esm/browser/fileReader.js:
  (*! regenerator-runtime -- Copyright (c) 2014-present, Facebook, Inc. -- license (MIT): https://github.com/facebook/regenerator/blob/main/LICENSE *)
*/
