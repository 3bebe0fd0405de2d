// Renders the API's own OpenAPI document. A separate file rather than an inline script, so the
// page's Content-Security-Policy can allow scripts from this server only.
window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // Swagger UI would otherwise send the document to a public validator.
    validatorUrl: null,
  });
});
