window.kernelvizMarkImages = function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
  document.body.setAttribute("data-images-ok", (imgs.length - bad.length) + "/" + imgs.length);
  document.body.setAttribute("data-images-pending", String(bad.length));
  return bad;
};
window.addEventListener("load", function () {
  window.kernelvizMarkImages().forEach(function (im) {
    console.error("image failed to load: " + im.getAttribute("src"));
  });
});
