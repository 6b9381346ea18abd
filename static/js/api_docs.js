/* API page: a small renderer of the OpenAPI schema (operations, parameters, bodies, answers),
 * so the docs work without a CDN or a bundled Swagger UI. */
(function () {
  "use strict";
  var box = document.getElementById("api-docs");
  if (!box) return;

  function h(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) { node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }

  function refName(schema) {
    if (!schema) return "";
    if (schema.$ref) return schema.$ref.split("/").pop();
    if (schema.type === "array") return refName(schema.items) + "[]";
    return schema.type || "object";
  }

  function describe(schema, components, depth) {
    if (!schema || depth > 3) return h("span", {}, []);
    if (schema.$ref) return describe(components[schema.$ref.split("/").pop()], components, depth);
    if (schema.allOf) return describe(schema.allOf[0], components, depth);
    if (schema.type === "array") return h("span", {}, ["[", describe(schema.items, components, depth), "]"]);
    if (!schema.properties) return h("code", {}, [schema.type || "object"]);
    var required = schema.required || [];
    var list = h("ul", { class: "schema" });
    Object.keys(schema.properties).forEach(function (name) {
      var prop = schema.properties[name];
      var label = name + (required.indexOf(name) >= 0 ? " *" : "") + ": ";
      var item = h("li", {}, [h("code", {}, [label + refName(prop) + (prop.enum ? " (" + prop.enum.join(" | ") + ")" : "")])]);
      if (prop.description) item.appendChild(h("span", { class: "muted" }, [" " + prop.description]));
      if (prop.$ref || prop.type === "array" || prop.properties) item.appendChild(describe(prop, components, depth + 1));
      list.appendChild(item);
    });
    return list;
  }

  /* An example value built from the schema (enum's first value, formats, nested objects). */
  function example(schema, components, depth) {
    if (!schema || depth > 4) return null;
    if (schema.example !== undefined) return schema.example;
    if (schema.$ref) return example(components[schema.$ref.split("/").pop()], components, depth);
    if (schema.allOf) return example(schema.allOf[0], components, depth);
    if (schema.oneOf || schema.anyOf) return example((schema.oneOf || schema.anyOf)[0], components, depth);
    if (schema.enum) return schema.enum[0];
    if (schema.type === "array") { var item = example(schema.items, components, depth + 1); return item === null ? [] : [item]; }
    if (schema.properties || schema.type === "object") {
      var out = {};
      Object.keys(schema.properties || {}).forEach(function (name) { out[name] = example(schema.properties[name], components, depth + 1); });
      if (!schema.properties && schema.additionalProperties) out.key = example(schema.additionalProperties, components, depth + 1);
      return out;
    }
    if (schema.type === "integer") return 1;
    if (schema.type === "number") return 1.5;
    if (schema.type === "boolean") return false;
    if (schema.format === "date-time") return "2025-01-31T12:00:00Z";
    if (schema.format === "date") return "2025-01-31";
    if (schema.format === "decimal") return "0.012300";
    if (schema.format === "uri") return "https://github.com/owner/name/pull/1";
    return schema.type === "string" ? "string" : null;
  }

  function exampleBlock(title, schema, components) {
    return h("details", { class: "example" }, [
      h("summary", {}, [title]),
      h("pre", { class: "code" }, [JSON.stringify(example(schema, components, 0), null, 2)]),
    ]);
  }

  fetch(box.dataset.schemaUrl, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (schema) {
    var components = (schema.components || {}).schemas || {};
    box.innerHTML = "";
    box.appendChild(h("p", {}, [schema.info.title + " " + schema.info.version + ": " + (schema.info.description || "")]));
    Object.keys(schema.paths).forEach(function (path) {
      Object.keys(schema.paths[path]).forEach(function (method) {
        var op = schema.paths[path][method];
        var section = h("details", { class: "operation", id: op.operationId }, [
          h("summary", {}, [h("span", { class: "method method-" + method }, [method.toUpperCase()]), " ", h("code", {}, [path]), " ", h("span", { class: "muted" }, [op.operationId || ""])]),
        ]);
        if (op.description) section.appendChild(h("p", {}, [op.description]));
        if (op.parameters && op.parameters.length) {
          var params = h("ul", {}, []);
          op.parameters.forEach(function (p) {
            params.appendChild(h("li", {}, [h("code", {}, [p.name + (p.required ? " *" : "")]), " (" + p.in + ", " + refName(p.schema) + ") " + (p.description || "")]));
          });
          section.appendChild(h("h4", {}, ["Parameters"]));
          section.appendChild(params);
        }
        if (op.requestBody) {
          var content = op.requestBody.content["application/json"] || op.requestBody.content[Object.keys(op.requestBody.content)[0]];
          section.appendChild(h("h4", {}, ["Body (JSON)"]));
          section.appendChild(describe(content.schema, components, 0));
          section.appendChild(exampleBlock("Example body", content.schema, components));
        }
        section.appendChild(h("h4", {}, ["Responses"]));
        var answers = h("ul", {}, []);
        Object.keys(op.responses || {}).forEach(function (code) {
          var resp = op.responses[code];
          var json = resp.content && resp.content["application/json"];
          var answer = h("li", {}, [h("code", {}, [code]), " " + (resp.description || "") + (json ? " → " + refName(json.schema) : "")]);
          if (json && code.charAt(0) === "2") {
            answer.appendChild(h("details", { class: "fields" }, [h("summary", {}, ["Fields"]), describe(json.schema, components, 0)]));
            answer.appendChild(exampleBlock("Example answer", json.schema, components));
          }
          answers.appendChild(answer);
        });
        section.appendChild(answers);
        box.appendChild(section);
      });
    });
  }).catch(function (err) {
    box.textContent = "Could not load the schema: " + err;
  });
})();
